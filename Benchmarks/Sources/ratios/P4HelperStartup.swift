// P4: `virtio-admin udev-event` from a cold process — when the service answers (the thin
// client, the goal) and when none does (one-shot provisioning) — against /bin/true, same run.
import BenchmarkSupport

#if canImport(Glibc)
import Glibc
#endif

/// GNU time's `%M` (peak RSS in KiB) of one run.
func peakRSS(_ binary: String, _ arguments: [String], environment: [String: String], scratch: String) -> Int {
    let output = scratch + "/rss"
    unlink(output)
    _ = runMeasured("/usr/bin/time", ["-f", "%M", "-o", output, binary] + arguments, environment: environment)
    guard let file = fopen(output, "r") else { return 0 }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 64)
    guard fgets(&buffer, 64, file) != nil else { return 0 }
    return Int(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).filter(\.isNumber)) ?? 0
}

/// Median wall time of `runs` runs (after one warm-up) and whether every run exited 0.
func medianRun(_ binary: String, _ arguments: [String], environment: [String: String], runs: Int = 20,
               before: () -> Void = {}) -> (seconds: Double, allOK: Bool) {
    var times: [Double] = []
    var allOK = true
    for round in 0...runs {
        before()
        let run = runMeasured(binary, arguments, environment: environment)
        if run.status != 0 { allOK = false }
        if round > 0 { times.append(run.seconds) }
    }
    times.sort()
    return (times[times.count / 2], allOK)
}

func startBackground(_ path: String, _ arguments: [String]) -> pid_t { spawnQuietly(path, arguments) }

func runP4(binary: String, before: String?) {
    print("\n## P4 — helper start-up: `udev-event` for one VF from a cold process\n")
    print("(binary: \(binary)\(before.map { ", before: " + $0 } ?? ""), built with `swift build -c release --static-swift-stdlib --product virtio-admin`;")
    print(" 20 runs after one warm-up, median; peak RSS from GNU time; the service is `serve --simulate` on a PF with 8 VFs)\n")
    let directory = "/tmp/virtio-admin-bench-p4-\(getpid())"
    _ = runProcess("/bin/mkdir", ["-p", directory])
    defer { _ = runProcess("/bin/rm", ["-rf", directory]) }
    let state = directory + "/pf.state", sys = directory + "/sys", policy = directory + "/policy.toml", socket = directory + "/serve.sock"
    _ = runProcess(binary, ["simulate", "create", state, "--vfs", "8"])
    _ = runProcess(binary, ["simulate", "sysfs", sys, "--from", state])
    let file = fopen(policy, "w")
    fputs("[[pf]]\nmatch = { type = \"net\" }\n  [[pf.vf]]\n  vfs = \"all\"\n  msix-vectors = 4\n  features = [\"VERSION_1\", \"MAC\"]\n", file)
    fclose(file)
    chmod(policy, 0o644)
    let environment = ["ACTION": "add", "SUBSYSTEM": "pci", "DEVPATH": "/devices/pci0000:00/0000:3b:00.1", "PCI_SLOT_NAME": "0000:3b:00.1"]

    let truth = medianRun("/bin/true", [], environment: [:])
    let truthRSS = peakRSS("/bin/true", [], environment: [:], scratch: directory)
    row(["path", "median wall", "/bin/true", "ratio", "peak RSS", "/bin/true", "ratio", "goal"])
    row(["---", "---", "---", "---", "---", "---", "---", "---"])

    // The service answers: the thin client (an absent policy file shows it is not read).
    let server = startBackground(binary, ["serve", "--policy", policy, "--simulate", state, "--sysfs-root", sys, "--socket", socket, "--no-udev-monitor", "--quiet"])
    for _ in 0..<500 where access(socket, F_OK) != 0 { usleep(10_000) }
    let client = ["udev-event", "--policy", directory + "/absent.toml", "--socket", socket, "--quiet"]
    for (label, path) in [("service answers", binary)] + (before.map { [("service answers, before", $0)] } ?? []) {
        let run = medianRun(path, client, environment: environment)
        let rss = peakRSS(path, client, environment: environment, scratch: directory)
        let goal = (run.seconds <= 0.010 ? "≤ 10 ms ✔" : "≤ 10 ms ✘") + ", " + (rss <= 16 * 1024 ? "≤ 16 MB ✔" : "≤ 16 MB ✘")
        row([label + (run.allOK ? "" : " (a run failed)"), f(run.seconds * 1000) + " ms", f(truth.seconds * 1000) + " ms", f(run.seconds / truth.seconds, 1) + "×",
             f(Double(rss) / 1024, 1) + " MB", f(Double(truthRSS) / 1024, 1) + " MB", f(Double(rss) / Double(max(truthRSS, 1)), 1) + "×", goal])
    }
    kill(server, SIGTERM)
    var status: Int32 = 0
    waitpid(server, &status, 0)

    // No service: the helper provisions the VF itself (alternating its vectors so every run changes it).
    let oneShot = ["udev-event", "--policy", policy, "--simulate", state, "--sysfs-root", sys, "--socket", directory + "/none.sock", "--quiet"]
    let run = medianRun(binary, oneShot, environment: environment) {
        _ = runProcess(binary, ["--simulate", state, "msix", "set", "0000:3b:00.0", "--vf", "0", "--vectors", "2"])
    }
    _ = runProcess(binary, ["--simulate", state, "msix", "set", "0000:3b:00.0", "--vf", "0", "--vectors", "2"])
    let rss = peakRSS(binary, oneShot, environment: environment, scratch: directory)
    row(["no service (one-shot provisioning)" + (run.allOK ? "" : " (a run failed)"), f(run.seconds * 1000) + " ms", f(truth.seconds * 1000) + " ms",
         f(run.seconds / truth.seconds, 1) + "×", f(Double(rss) / 1024, 1) + " MB", f(Double(truthRSS) / 1024, 1) + " MB",
         f(Double(rss) / Double(max(truthRSS, 1)), 1) + "×", run.seconds <= 0.020 ? "≤ 20 ms ✔" : "≤ 20 ms ✘"])
}
