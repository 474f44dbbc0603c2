// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Version 2 on a tracepoint that does not exist: loads, then fails to attach. */
#define ROLLOUT_SEC "tracepoint/uptrkv/no_such_event"
#include "rollout_v2.bpf.c"
