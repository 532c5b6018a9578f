#!/usr/bin/env python3
"""Sums the allocation call stacks `ratios p2` writes with P2_ALLOC_TRACE=FILE by call site.

    cd Benchmarks && P2_ALLOC_TRACE=/tmp/allocs P2_TOTAL=2000 P2_MODEL=thread P2_ROWS=command \
        .build/release/ratios p2 && python3 Scripts/alloc-sites.py /tmp/allocs.1

A site is the innermost frames of the stack that are not the allocator's own (the
replacement malloc, the Swift runtime's allocation entry points, glibc): printed with the
callers above it (--depth, 3 by default), and as allocations per command.
"""
import collections, re, subprocess, sys

SWIFT = "/opt/swift/usr/bin"
args = [a for a in sys.argv[1:] if not a.startswith("--")]
depth = next((int(a[8:]) for a in sys.argv[1:] if a.startswith("--depth=")), 3)

header, stacks, current = {}, [], None
for line in open(args[0]):
    if line.startswith("# "):
        key, _, value = line[2:].strip().partition(" ")
        header[key] = value
    elif line.startswith("stack "):
        current = []
        stacks.append(current)
    elif line.startswith("  ") and current is not None:
        obj, _, offset = line.strip().rpartition(" ")
        current.append((obj, offset))
commands = int(header.get("commands", "1"))

# Symbolize each (object, offset) once: llvm-symbolizer per object, then swift-demangle.
names = {}
for obj in {o for s in stacks for o, _ in s if o != "?"}:
    offsets = sorted({off for s in stacks for o, off in s if o == obj})
    out = subprocess.run([f"{SWIFT}/llvm-symbolizer", f"--obj={obj}", "--output-style=GNU", "--no-inlines"],
                         input="\n".join(offsets), capture_output=True, text=True).stdout.split("\n")
    symbols = out[0::2]
    demangled = subprocess.run([f"{SWIFT}/swift-demangle", "--simplified", "--compact"], input="\n".join(symbols),
                               capture_output=True, text=True).stdout.split("\n")
    for offset, symbol in zip(offsets, demangled):
        names[(obj, offset)] = f"{symbol} [{obj.rsplit('/', 1)[-1]}]"

EXACT = {"trace", "count", "malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign"}
ALLOCATOR = ("alloc_counter",  "calloc", "realloc", "memalign", "swift_slowAlloc", "swift_allocObject",
             "swift_allocBox", "swift_task_alloc", "swift_job_alloc", "_allocateUninitializedArray",
             "allocateUninitialized", "_ContiguousArrayBuffer.init", "_allocateBufferUninitialized",
             "swift::", "(anonymous namespace)", "__libc", "operator new")
# Standard-library containers between the allocator and the code that asked: shown as the
# "what" (Array growth, a Set's storage), skipped to find the caller.
STDLIB = {"Array", "ContiguousArray", "_ContiguousArrayBuffer", "_NativeSet", "_NativeDictionary", "Set", "Dictionary",
          "Sequence", "_copySequenceToContiguousArray", "_StringGuts", "String", "__StringStorage", "_allocateStringStorage",
          "_SetStorage", "_DictionaryStorage", "Set._Variant", "Dictionary._Variant"}
def base(name):
    for prefix in ("specialized ", "static ", "generic specialization"):
        name = name.removeprefix(prefix)
    return re.split(r"[.(<]", name, 1)[0].strip()

sites = collections.Counter()
for stack in stacks:
    frames = [names.get(f, f"? {f[1]}") for f in stack]
    start = next((i for i, name in enumerate(frames) if name.split(" [")[0] not in EXACT and not any(a in name for a in ALLOCATOR)), 0)
    caller = next((i for i in range(start, len(frames)) if base(frames[i]) not in STDLIB), start)
    what = frames[caller - 1] if caller > 0 else frames[0]
    sites[tuple([what] + frames[caller:caller + depth])] += 1

print(f"{header.get('row', '?')}: {len(stacks)} allocations, {commands} commands, {len(stacks) / commands:.2f} a command\n")
for site, count in sites.most_common():
    print(f"{count / commands:6.2f}/cmd  {count:7d}  " + "\n                    <- ".join(site))
