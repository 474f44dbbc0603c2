// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Torture test program, version 1 (see torture.h). */
#define TORTURE_VERSION 1
#include "torture.h"
