// VFIO ioctl numbers for Swift. The request numbers are function-like macros in
// <linux/vfio.h>, which Swift cannot import: these functions take them from the header
// itself (never from memory).
#ifndef VIRTIOADMIN_CLINUXVFIO_H
#define VIRTIOADMIN_CLINUXVFIO_H

#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <sys/eventfd.h>

static inline int cvfio_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

static inline unsigned long cvfio_get_api_version(void) { return VFIO_GET_API_VERSION; }
static inline unsigned long cvfio_check_extension(void) { return VFIO_CHECK_EXTENSION; }
static inline unsigned long cvfio_set_iommu(void) { return VFIO_SET_IOMMU; }
static inline unsigned long cvfio_group_get_status(void) { return VFIO_GROUP_GET_STATUS; }
static inline unsigned long cvfio_group_set_container(void) { return VFIO_GROUP_SET_CONTAINER; }
static inline unsigned long cvfio_group_get_device_fd(void) { return VFIO_GROUP_GET_DEVICE_FD; }
static inline unsigned long cvfio_device_get_info(void) { return VFIO_DEVICE_GET_INFO; }
static inline unsigned long cvfio_device_get_region_info(void) { return VFIO_DEVICE_GET_REGION_INFO; }
static inline unsigned long cvfio_device_get_irq_info(void) { return VFIO_DEVICE_GET_IRQ_INFO; }
static inline unsigned long cvfio_device_set_irqs(void) { return VFIO_DEVICE_SET_IRQS; }
static inline unsigned long cvfio_device_reset(void) { return VFIO_DEVICE_RESET; }
static inline unsigned long cvfio_iommu_map_dma(void) { return VFIO_IOMMU_MAP_DMA; }
static inline unsigned long cvfio_iommu_get_info(void) { return VFIO_IOMMU_GET_INFO; }
static inline size_t cvfio_iommu_info_cap_offset_offset(void) { return offsetof(struct vfio_iommu_type1_info, cap_offset); }
static inline unsigned int cvfio_iommu_info_caps_flag(void) { return VFIO_IOMMU_INFO_CAPS; }
static inline unsigned int cvfio_iova_range_cap_id(void) { return VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE; }
static inline size_t cvfio_iova_range_ranges_offset(void) { return offsetof(struct vfio_iommu_type1_info_cap_iova_range, iova_ranges); }
static inline unsigned long cvfio_iommu_unmap_dma(void) { return VFIO_IOMMU_UNMAP_DMA; }

// The calls themselves go through VirtioSystem's ioctl (EINTR retried, errno typed).

// Layout facts the tests compare with the digest and with offsetof.
static inline size_t cvfio_dma_map_size(void) { return sizeof(struct vfio_iommu_type1_dma_map); }
static inline size_t cvfio_dma_map_iova_offset(void) { return offsetof(struct vfio_iommu_type1_dma_map, iova); }
static inline size_t cvfio_dma_map_vaddr_offset(void) { return offsetof(struct vfio_iommu_type1_dma_map, vaddr); }
static inline size_t cvfio_dma_map_size_offset(void) { return offsetof(struct vfio_iommu_type1_dma_map, size); }
static inline size_t cvfio_region_info_size(void) { return sizeof(struct vfio_region_info); }
static inline size_t cvfio_region_info_offset_offset(void) { return offsetof(struct vfio_region_info, offset); }
static inline size_t cvfio_irq_set_size(void) { return sizeof(struct vfio_irq_set); }
static inline size_t cvfio_group_status_size(void) { return sizeof(struct vfio_group_status); }

#endif
