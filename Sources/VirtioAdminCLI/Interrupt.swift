import Foundation
import VirtioAdmin
import VirtioAdminDriver

/// SIGINT/SIGTERM during a one-shot command: every PF whose admin queue the process opened
/// is reset (or its DMA memory kept, if it does not reset) before the process exits with
/// 128 + the signal number, so no device is left writing into memory the process gives back;
/// then a simulated PF's state is saved (what the commands did to it stays, as on hardware).
/// (`serve` and `monitor` finish gracefully on their own.)
///
/// One interrupt is handled (a second signal changes nothing), and once it is being handled
/// the command's own exit waits for it: the process exits with 128 + the signal number, from
/// the handler, and no other thread calls `exit` meanwhile.
enum InterruptCleanup {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []
    static let state = NSLock()
    nonisolated(unsafe) static var handling = false

    static func install() {
        // The command's own exit (ArgumentParser's, after the interrupted work failed) waits
        // for the handler, which ends the process with _exit.
        atexit {
            InterruptCleanup.state.lock()
            let interrupted = InterruptCleanup.handling
            InterruptCleanup.state.unlock()
            if interrupted { while true { pause() } }
        }
        sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { handle(number) }
            source.resume()
            return source
        }
    }

    static func handle(_ number: Int32) {
        state.lock()
        let first = !handling
        handling = true
        state.unlock()
        guard first else { return }
        var line = "virtio-admin: interrupted by signal \(number).\n"
        for (device, quarantine, status) in AdminQueueDriver.closeAllOpen() {
            if let quarantine {
                line += "virtio-admin: \(quarantine)\n"
            } else {
                line += "virtio-admin: \(device): admin queue closed; device_status reads \(status).\n"
            }
        }
        // A simulated PF keeps what was done to it, as a real device does.
        for (pf, path, error) in SimulatedPFOpener.saveAllHeldForExit() {
            line += error.map { "virtio-admin: simulated PF \(pf): state NOT saved to \(path): \($0)\n" }
                ?? "virtio-admin: simulated PF \(pf): what the device did before the interrupt is saved in \(path).\n"
        }
        FileHandle.standardError.write(Data(line.utf8))
        _exit(128 + number)
    }
}
