import Foundation
import VirtioAdminDriver

/// SIGINT/SIGTERM during a one-shot command: every PF whose admin queue the process opened
/// is reset (or its DMA memory kept, if it does not reset) before the process exits with
/// 128 + the signal number, so no device is left writing into memory the process gives back.
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
                FileHandle.standardError.write(Data(line.utf8))
                exit(128 + number)
            }
            source.resume()
            return source
        }
    }
}
