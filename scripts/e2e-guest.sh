#!/bin/sh
# /init of the e2e guest (see scripts/e2e-qemu). Runs each step, prints PASS/FAIL lines
# and 'N passed, N failed', then powers off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# DMA at physical addresses (uio_pci_generic) needs 2 MiB huge pages.
echo 8 > /proc/sys/vm/nr_hugepages
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio-rng failover net_failover virtio_net \
         irqbypass vfio vfio_virqfd vfio_iommu_type1 vfio-pci-core vfio-pci uio uio_pci_generic; do
    insmod /modules/$m.ko 2>/dev/null
done
sleep 1
passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { name="$1"; shift; if "$@" >/tmp/out 2>&1; then pass "$name"; else fail "$name: $(head -3 /tmp/out | tr '\n' ' ')"; fi; }
driver() { basename "$(readlink /sys/bus/pci/devices/$1/driver 2>/dev/null)" 2>/dev/null; }
VA=/bin/virtio-admin

rng=""; net=""
for d in /sys/bus/pci/devices/*; do
    case "$(cat $d/vendor):$(cat $d/device)" in
        0x1af4:0x1044) rng=$(basename $d) ;;
        0x1af4:0x1041) net=$(basename $d) ;;
    esac
done
echo "INFO rng=$rng net=$net rng-driver=$(driver $rng) net-driver=$(driver $net)"

# 1. Enumeration with both back ends, identical results; decoding.
$VA list --backend udev --json >/tmp/udev.json 2>/tmp/udev.err
$VA list --backend sysfs --json >/tmp/sysfs.json 2>/tmp/sysfs.err
if [ -s /tmp/udev.json ] && diff /tmp/udev.json /tmp/sysfs.json >/dev/null && grep -q "\"$rng\"" /tmp/sysfs.json && grep -q "\"$net\"" /tmp/sysfs.json; then
    pass "enumerate: udev and sysfs agree and list rng $rng and net $net"
else
    fail "enumerate: udev and sysfs differ or miss a device ($(head -c 200 /tmp/udev.err))"
fi
check "show: decode $rng" sh -c "$VA show $rng --json | grep -q '\"cfgType\" : \"notify\"'"

# 2. The in-use guard: an interface that is up is refused.
ifname=$(ls /sys/bus/pci/devices/$net/virtio*/net 2>/dev/null | head -1)
ip link set "$ifname" up
if $VA bind $net --driver vfio-pci >/tmp/out 2>&1; then fail "guard: binding $net with $ifname up was not refused"; else
    if grep -q "network interface $ifname is up" /tmp/out; then pass "guard: $net refused while $ifname is up"; else fail "guard: wrong message: $(cat /tmp/out)"; fi
fi
ip link set "$ifname" down

# 3. VFIO: bind rng to vfio-pci, real I/O through our transport and virtqueue.
check "bind $rng to vfio-pci" $VA bind $rng --driver vfio-pci
[ "$(driver $rng)" = "vfio-pci" ] && pass "driver of $rng is vfio-pci" || fail "driver of $rng is $(driver $rng)"
a=$($VA entropy $rng --bytes 32 2>/tmp/e1); b=$($VA entropy $rng --bytes 32 2>/tmp/e2)
if [ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] && [ "$a" != "$(echo "$a" | sed 's/[0-9a-f][0-9a-f]/00/g')" ]; then
    pass "entropy via VFIO: two reads of 32 bytes differ ($(echo $a | cut -c1-23)...)"
else
    fail "entropy via VFIO: '$a' / '$b' $(cat /tmp/e1)"
fi
c=$($VA entropy $rng --bytes 16 --msix 2>/tmp/e3)
[ -n "$c" ] && pass "entropy via VFIO with an MSI-X eventfd" || fail "entropy with MSI-X: $(cat /tmp/e3)"

# 4. The admin driver refuses a device without an admin virtqueue and leaves it reset.
if $VA commands $rng >/tmp/out 2>&1; then fail "admin: commands on $rng did not fail"; else
    grep -q "does not offer VIRTIO_F_ADMIN_VQ" /tmp/out && pass "admin: refused cleanly ($(cut -c1-90 /tmp/out))" || fail "admin: wrong refusal: $(cat /tmp/out)"
fi
$VA probe $rng --json >/tmp/probe.json 2>&1
grep -q '"status" : 0,' /tmp/probe.json && pass "admin: $rng left reset (device_status 0)" || fail "admin: device not reset: $(head -c 300 /tmp/probe.json)"

# 5. Restore the original driver.
check "restore $rng" $VA restore $rng
[ "$(driver $rng)" = "virtio-pci" ] && pass "driver of $rng is virtio-pci again" || fail "driver of $rng is $(driver $rng)"

# 6. uio_pci_generic: sysfs resourceN mapping, DMA at physical addresses from pagemap.
check "bind $rng to uio_pci_generic" $VA bind $rng --driver uio_pci_generic
a=$($VA entropy $rng --bytes 32 2>/tmp/e1); b=$($VA entropy $rng --bytes 32 2>/tmp/e2)
if [ -n "$a" ] && [ "$a" != "$b" ]; then pass "entropy via uio_pci_generic + pagemap ($(grep -o 'via [^;]*' /tmp/e1 | cut -c1-60))"; else fail "entropy via uio: $(cat /tmp/e1)"; fi
check "restore $rng from uio" $VA restore $rng
check "bind $net to uio_pci_generic" $VA bind $net --driver uio_pci_generic
check "probe $net through resourceN" sh -c "$VA probe $net | grep -q VERSION_1"
check "restore $net" $VA restore $net
[ "$(driver $net)" = "virtio-pci" ] && pass "driver of $net is virtio-pci again" || fail "driver of $net is $(driver $net)"

# 7. A real udevd runs the helper for the guest's devices (rule in /etc/udev/rules.d).
/lib/systemd/systemd-udevd --daemon >/tmp/udevd.log 2>&1
udevadm trigger --action=add --subsystem-match=pci >/dev/null 2>&1
udevadm settle --timeout=20 >/dev/null 2>&1
sleep 1
if grep -q "add $rng: ignored: $rng has no SR-IOV role" /tmp/helper.log && grep -q "add $net:" /tmp/helper.log; then
    pass "udevd ran the helper with a real event for $rng and $net ($(grep -c virtio-admin /tmp/helper.log) log lines)"
else
    fail "udevd did not run the helper as expected: $(head -c 300 /tmp/helper.log) $(head -c 200 /tmp/udevd.log)"
fi

# 8. The service listens to udev itself: a triggered event reaches it through the libudev
#    monitor (not through a helper process), and SIGTERM stops it with exit status 0.
$VA serve --socket /run/e2e-serve.sock >/tmp/serve.log 2>&1 &
serve=$!
for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /run/e2e-serve.sock ] && break; sleep 1; done
udevadm trigger --action=add --subsystem-match=pci >/dev/null 2>&1
udevadm settle --timeout=20 >/dev/null 2>&1
sleep 2
[ -f /run/virtio-admin/monitor.ready ] && ready=yes || ready=no
kill -TERM $serve; wait $serve; status=$?
[ -f /run/virtio-admin/monitor.ready ] && left=yes || left=no
if grep -q "udev event add $rng: ignored: $rng has no SR-IOV role" /tmp/serve.log && [ "$status" = 0 ] && [ $ready = yes ] && [ $left = no ]; then
    pass "the service took udev's own event for $rng (monitor.ready while listening) and stopped on SIGTERM with status 0"
else
    fail "service and the udev monitor (status $status, ready file $ready, left $left): $(head -c 400 /tmp/serve.log)"
fi

echo "$passed passed, $failed failed"
poweroff -f
