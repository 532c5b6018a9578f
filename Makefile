# Install VirtioAdmin: the binary, the udev rule, the systemd units and an example policy.
#   make install PREFIX=/usr/local          (DESTDIR is honoured for packaging)
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UDEVDIR ?= $(SYSCONFDIR)/udev/rules.d
UNITDIR ?= $(SYSCONFDIR)/systemd/system
SWIFT_FLAGS ?= -c release --static-swift-stdlib
BINARY ?= $(shell swift build $(SWIFT_FLAGS) --show-bin-path)/virtio-admin

.PHONY: build install install-files uninstall

build:
	swift build $(SWIFT_FLAGS) --product virtio-admin

install: build install-files

install-files:
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UDEVDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/virtio-admin $(DESTDIR)$(PREFIX)/share/doc/virtio-admin
	install -m 0755 $(BINARY) $(DESTDIR)$(PREFIX)/bin/virtio-admin
	sed 's|/usr/local/bin/virtio-admin|$(PREFIX)/bin/virtio-admin|g' Examples/udev/99-virtio-admin.rules > $(DESTDIR)$(UDEVDIR)/99-virtio-admin.rules
	chmod 0644 $(DESTDIR)$(UDEVDIR)/99-virtio-admin.rules
	sed 's|/usr/local/bin/virtio-admin|$(PREFIX)/bin/virtio-admin|g; s|/usr/local/share|$(PREFIX)/share|g' Examples/udev/virtio-admin.service > $(DESTDIR)$(UNITDIR)/virtio-admin.service
	install -m 0644 Examples/udev/virtio-admin.socket $(DESTDIR)$(UNITDIR)/virtio-admin.socket
	sed 's|/usr/local/bin/virtio-admin|$(PREFIX)/bin/virtio-admin|g; s|/usr/local/share|$(PREFIX)/share|g' Examples/systemd/virtio-admin-apply.service > $(DESTDIR)$(UNITDIR)/virtio-admin-apply.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/virtio-admin-apply.service
	test -e $(DESTDIR)$(SYSCONFDIR)/virtio-admin/policy.toml || install -m 0644 Examples/udev/policy.toml $(DESTDIR)$(SYSCONFDIR)/virtio-admin/policy.toml
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/virtio-admin/README.md
	@echo "Installed. Then: udevadm control --reload && systemctl daemon-reload && systemctl enable --now virtio-admin.socket (and, to provision at boot, virtio-admin-apply.service)"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/virtio-admin $(DESTDIR)$(UDEVDIR)/99-virtio-admin.rules $(DESTDIR)$(UNITDIR)/virtio-admin.service $(DESTDIR)$(UNITDIR)/virtio-admin.socket $(DESTDIR)$(UNITDIR)/virtio-admin-apply.service
