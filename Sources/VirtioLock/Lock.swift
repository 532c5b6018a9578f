// VirtioSystem (the project's one operating-system module) under the former name of the
// module that held its lock: targets that depend on VirtioLock reach VirtioSystem through
// it, and code that still imports VirtioLock builds. New code imports VirtioSystem.
@_exported import VirtioSystem
