// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Version 2 with a bug the verifier rejects: a failed rollout must keep v1. */
#define ROLLOUT_V2_REJECTED
#include "rollout_v2.bpf.c"
