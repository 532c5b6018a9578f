#include "virtio_admin_plugin.h"
