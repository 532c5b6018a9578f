import PCIConfig
import VirtioSpec
import VirtioSystem

/// A driver user space can drive a function through.
package enum UserSpaceDriver: String, Sendable, CaseIterable {
    case vfioPCI = "vfio-pci"
    case uioPCIGeneric = "uio_pci_generic"
}

/// Errors of binding and unbinding.
package enum BindingError: Error, Hashable, Sendable, CustomStringConvertible {
    case inUse(address: PCIAddress, driver: String, uses: [DeviceUse])
    case notVirtio(address: PCIAddress)
    case driverNotLoaded(driver: String, path: String)
    case timedOut(address: PCIAddress, expected: String?, found: String?)
    case sysfs(address: PCIAddress, SystemCallError)
    case enumeration(LinuxError)

    package var description: String {
        switch self {
        case let .inUse(address, driver, uses):
            "\(address): refusing to take the function from \(driver): \(uses.map(\.description).joined(separator: "; ")); stop using it first, or pass --force."
        case let .notVirtio(address):
            "\(address): refusing to bind a function that is not a virtio function."
        case let .driverNotLoaded(driver, path):
            "the \(driver) driver is not loaded (\(path) does not exist); run 'modprobe \(String(driver.map { $0 == "-" ? "_" : $0 }))'."
        case let .timedOut(address, expected, found):
            "\(address): expected driver \(expected ?? "none") after binding, found \(found ?? "none")."
        case let .sysfs(address, error):
            "\(address): \(error)."
        case .enumeration(let error):
            error.description
        }
    }
}

/// One step of a bind, unbind or restore (printed by `--dry-run`).
package struct BindingStep: Sendable, Hashable, CustomStringConvertible {
    package var path: String
    package var value: String
    package var description: String { "write '\(value == "\n" ? "\\n" : value)' to \(path)" }
}

/// Binds virtio functions to a user-space driver and back, through `driver_override`, the
/// drivers' `bind`/`unbind` files and `drivers_probe` (digest §10), with a guard against
/// taking a function a kernel driver is using.
package struct DeviceBinder: Sendable {
    package var sysfsRoot: String
    package var procRoot: String
    /// How long to wait for the kernel to (re)bind.
    package var timeoutMilliseconds: Int

    package init(sysfsRoot: String = "/sys", procRoot: String = "/proc", timeoutMilliseconds: Int = 5000) {
        self.sysfsRoot = sysfsRoot
        self.procRoot = procRoot
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    var enumerator: SysfsEnumerator { SysfsEnumerator(root: sysfsRoot) }

    /// The steps that bind `address` to `driver`.
    package func bindPlan(_ address: PCIAddress, to driver: UserSpaceDriver, force: Bool) throws(BindingError) -> [BindingStep] {
        let function: VirtioFunction
        do { function = try enumerator.function(at: address) } catch {
            if case .notVirtio = error { throw .notVirtio(address: address) }
            throw .enumeration(error)
        }
        if let current = function.driver, current != driver.rawValue, !force {
            let uses = InUseDetector(sysfsRoot: sysfsRoot, procRoot: procRoot).uses(of: address)
            if !uses.isEmpty { throw .inUse(address: address, driver: current, uses: uses) }
        }
        let directory = enumerator.directory(of: address)
        var steps = [BindingStep(path: directory + "/" + SysfsAttribute.driverOverride, value: driver.rawValue)]
        if let current = function.driver, current != driver.rawValue {
            steps.append(BindingStep(path: directory + "/driver/unbind", value: address.description))
        }
        if function.driver != driver.rawValue {
            steps.append(BindingStep(path: sysfsRoot + "/bus/pci/drivers_probe", value: address.description))
        }
        return steps
    }

    /// The steps that give `address` back to its kernel driver.
    package func restorePlan(_ address: PCIAddress) throws(BindingError) -> [BindingStep] {
        let function: VirtioFunction
        do { function = try enumerator.function(at: address) } catch { throw .enumeration(error) }
        let directory = enumerator.directory(of: address)
        var steps = [BindingStep(path: directory + "/" + SysfsAttribute.driverOverride, value: "\n")]
        if function.driver != nil { steps.append(BindingStep(path: directory + "/driver/unbind", value: address.description)) }
        steps.append(BindingStep(path: sysfsRoot + "/bus/pci/drivers_probe", value: address.description))
        return steps
    }

    /// The steps that unbind `address` (leaving it with no driver).
    package func unbindPlan(_ address: PCIAddress, force: Bool) throws(BindingError) -> [BindingStep] {
        let function: VirtioFunction
        do { function = try enumerator.function(at: address) } catch { throw .enumeration(error) }
        guard let current = function.driver else { return [] }
        if !force && current != UserSpaceDriver.vfioPCI.rawValue && current != UserSpaceDriver.uioPCIGeneric.rawValue {
            let uses = InUseDetector(sysfsRoot: sysfsRoot, procRoot: procRoot).uses(of: address)
            if !uses.isEmpty { throw .inUse(address: address, driver: current, uses: uses) }
        }
        return [BindingStep(path: enumerator.directory(of: address) + "/driver/unbind", value: address.description)]
    }

    /// Runs steps, then waits until the function's driver is `expected` (nil: unbound; "*": any).
    package func apply(_ steps: [BindingStep], address: PCIAddress, expecting expected: String?) throws(BindingError) -> String? {
        if let expected, expected != "*", !Sys.exists(sysfsRoot + "/bus/pci/drivers/" + expected) {
            throw .driverNotLoaded(driver: expected, path: sysfsRoot + "/bus/pci/drivers/" + expected)
        }
        for step in steps {
            do { try Sys.writeText(step.value, to: step.path) } catch {
                // drivers_probe reports an error when no driver takes the device; the wait below says what happened.
                if !step.path.hasSuffix("drivers_probe") { throw .sysfs(address: address, error) }
            }
        }
        var waited = 0
        while true {
            let driver = Sys.readLink(enumerator.directory(of: address) + "/driver").map(baseName)
            if driver == expected || (expected == "*" && driver != nil) { return driver }
            if waited >= timeoutMilliseconds { throw .timedOut(address: address, expected: expected, found: driver) }
            Sys.sleepMilliseconds(10)
            waited += 10
        }
    }

    /// Binds `address` to `driver`. Returns the driver it was bound to before.
    @discardableResult
    package func bind(_ address: PCIAddress, to driver: UserSpaceDriver, force: Bool = false) throws(BindingError) -> String? {
        let before = (try? enumerator.function(at: address))?.driver
        _ = try apply(try bindPlan(address, to: driver, force: force), address: address, expecting: driver.rawValue)
        return before
    }

    /// Clears the override and lets the kernel pick the function's own driver again.
    @discardableResult
    package func restore(_ address: PCIAddress) throws(BindingError) -> String? {
        try apply(try restorePlan(address), address: address, expecting: "*")
    }

    package func unbind(_ address: PCIAddress, force: Bool = false) throws(BindingError) {
        _ = try apply(try unbindPlan(address, force: force), address: address, expecting: nil)
    }
}
