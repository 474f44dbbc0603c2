// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* bench_seq without the sequence count: the baseline (see kv_store.h). */
#define KV_STORE_NO_SEQCOUNT
#include "bench_seq.bpf.c"
