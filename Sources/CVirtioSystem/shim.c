#include "CVirtioSystem.h"
