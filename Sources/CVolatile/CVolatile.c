// All helpers are static inline in include/CVolatile.h; this file gives the target a source.
#include "CVolatile.h"
