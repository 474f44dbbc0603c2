// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Torture test program, version 3 (see torture.h). */
#define TORTURE_VERSION 3
#include "torture.h"
