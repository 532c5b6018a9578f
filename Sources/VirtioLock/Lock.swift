// The lock moved to VirtioSystem (the project's one operating-system module); this module
// keeps its former name working for code that still imports it. New code imports VirtioSystem.
@_exported import VirtioSystem
