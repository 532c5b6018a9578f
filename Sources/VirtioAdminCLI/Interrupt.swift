import Foundation
import VirtioAdmin
import VirtioAdminDriver

/// SIGINT/SIGTERM during a one-shot command: every PF whose admin queue the process opened
/// is reset (or its DMA memory kept, if it does not reset) before the process exits with
/// 128 + the signal number, so no device is left writing into memory the process gives back;
/// then a simulated PF's state is saved (what the commands did to it stays, as on hardware).
/// (`serve` and `monitor` finish gracefully on their own.)
enum InterruptCleanup {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []

    static func install() {
        sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                var line = "virtio-admin: interrupted by signal \(number).\n"
                for (device, quarantine, status) in AdminQueueDriver.closeAllOpen() {
                    if let quarantine {
                        line += "virtio-admin: \(quarantine)\n"
                    } else {
                        line += "virtio-admin: \(device): admin queue closed; device_status reads \(status).\n"
                    }
                }
                // A simulated PF keeps what was done to it, as a real device does.
                for (pf, path, error) in SimulatedPFOpener.saveAllHeld() {
                    line += error.map { "virtio-admin: simulated PF \(pf): state NOT saved to \(path): \($0)\n" }
                        ?? "virtio-admin: simulated PF \(pf): what the device did before the interrupt is saved in \(path).\n"
                }
                FileHandle.standardError.write(Data(line.utf8))
                exit(128 + number)
            }
            source.resume()
            return source
        }
    }
}
