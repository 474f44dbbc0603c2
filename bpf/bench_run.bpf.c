// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * One program run as a program keeping a few counters and settings does it:
 * one task storage lookup, 4 reads and 4 read-modify-writes of 8-byte values
 * with keys fixed at build time.  Side by side:
 *   run_struct    the status quo: a struct in a task storage value
 *   run_known     the store through known keys (KV_KNOWN, places resolved at load)
 *   run_dynamic   the store through kv_store_get/kv_store_put with constant keys
 *   run_floor     page 0 and offsets fixed at compile time: what a key costs
 *                 at best (one load of the page pointer more than a struct)
 * and the parts: the loop alone, each lookup alone.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"
#include "bench.h"

struct bench_struct {
	__u64 f[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct bench_struct);
} bench_struct_map SEC(".maps");

KV_KEY(r0, 0, __u64);
KV_KEY(r1, 1, __u64);
KV_KEY(r2, 2, __u64);
KV_KEY(r3, 3, __u64);
KV_KEY(w0, 4, __u64);
KV_KEY(w1, 5, __u64);
KV_KEY(w2, 6, __u64);
KV_KEY(w3, 7, __u64);

static __always_inline struct bench_struct *struct_lookup(void)
{
	return bpf_task_storage_get(&bench_struct_map, bpf_get_current_task_btf(), 0, 0);
}

BENCH(run_base, , bench_use(i);)
/* One run per callback call, for run_dynamic: 4 runs of its 12 inlined
 * kv_store_get/put calls in one callback take 7.2's verifier past its limit. */
BENCH_N(run_base1, 1, , bench_use(i);)

BENCH(run_struct_lookup, , {
	struct bench_struct *v = struct_lookup();

	if (v)
		s++;
	else
		err++;
})

BENCH(run_struct, , {
	struct bench_struct *v = struct_lookup();

	if (!v) {
		err++;
		continue;
	}
	s += v->f[0] + v->f[1] + v->f[2] + v->f[3];
	v->f[4]++;
	v->f[5]++;
	v->f[6]++;
	v->f[7]++;
})

BENCH(run_kv_lookup, , {
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());

	if (kv)
		s++;
	else
		err++;
})

#define KNOWN_READ(name)	{ __u64 *p = KV_KNOWN(kv, name); if (p) s += *p; else err++; }
#define KNOWN_BUMP(name)	{ __u64 *p = KV_KNOWN(kv, name); if (p) (*p)++; else err++; }

BENCH(run_known, , {
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());

	if (!kv || !kv_known_ready(kv)) {
		err++;
		continue;
	}
	KNOWN_READ(r0) KNOWN_READ(r1) KNOWN_READ(r2) KNOWN_READ(r3)
	KNOWN_BUMP(w0) KNOWN_BUMP(w1) KNOWN_BUMP(w2) KNOWN_BUMP(w3)
})

#define DYN_READ(name)	{ __u64 x; if (kv_store_get(kv, KV_KEY_##name, &x, 8) == 8) s += x; else err++; }
#define DYN_BUMP(name)	{ __u64 x; if (kv_store_get(kv, KV_KEY_##name, &x, 8) == 8) { x++;	\
			  if (kv_store_put(kv, KV_KEY_##name, &x, 8)) err++; } else err++; }

BENCH_N(run_kv_lookup1, 1, , {
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());

	if (kv)
		s++;
	else
		err++;
})

BENCH_N(run_dynamic, 1, , {
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());

	if (!kv) {
		err++;
		continue;
	}
	DYN_READ(r0) DYN_READ(r1) DYN_READ(r2) DYN_READ(r3)
	DYN_BUMP(w0) DYN_BUMP(w1) DYN_BUMP(w2) DYN_BUMP(w3)
})

BENCH(run_floor, , {
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	__u64 *p;

	if (!kv) {
		err++;
		continue;
	}
	p = (__u64 *)kv->page0;		/* user space puts keys 0..7 at offsets 0..56 of page 0 */
	if (!p) {
		err++;
		continue;
	}
	s += p[0] + p[1] + p[2] + p[3];
	p[4]++;
	p[5]++;
	p[6]++;
	p[7]++;
})

char LICENSE[] SEC("license") = "Dual BSD/GPL";

