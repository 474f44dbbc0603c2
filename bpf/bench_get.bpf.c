// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Hot-path benchmark: 8-byte reads with random keys, the store against the
 * maps people use today.  Each program runs `iters` reads in a bpf_loop
 * (inlined by the verifier) and reports the elapsed time; user space runs
 * them interleaved with BPF_PROG_TEST_RUN and prints ratios.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"


struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KV_MAX_KEYS);
	__type(key, __u32);
	__type(value, __u64);
} bench_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KV_MAX_KEYS);
	__type(key, __u32);
	__type(value, __u64);
} bench_array SEC(".maps");

__u32 key_mask;		/* keys are drawn from 0..key_mask (a power of two minus one) */
__u32 seed;
__u32 iters;
__u64 elapsed_ns;
__u64 sum;
long errors;

struct bench_ctx {
	struct kv_store_value *kv;
	__u64 sum;
	long errors;
	__u32 rng;
	__u32 mask;
};

/* xorshift32: a key sequence that does not repeat, so branch predictors cannot learn it */
static __always_inline __u32 bench_key(struct bench_ctx *c)
{
	__u32 x = c->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	c->rng = x;
	return x & c->mask;
}

static long loop_base(__u64 i, struct bench_ctx *c)
{
	c->sum += bench_key(c);
	return 0;
}

static __always_inline long bench_lookup(void *map, struct bench_ctx *c)
{
	__u32 k = bench_key(c);
	__u64 *v = bpf_map_lookup_elem(map, &k);

	if (v)
		c->sum += *v;
	else
		c->errors++;
	return 0;
}

static long loop_hash(__u64 i, struct bench_ctx *c)
{
	return bench_lookup(&bench_hash, c);
}

static long loop_array(__u64 i, struct bench_ctx *c)
{
	return bench_lookup(&bench_array, c);
}

static long loop_kv(__u64 i, struct bench_ctx *c)
{
	__u64 v;

	if (kv_store_get(c->kv, bench_key(c), &v, sizeof(v)) == sizeof(v))
		c->sum += v;
	else
		c->errors++;
	return 0;
}

/* One task storage lookup per read: what a program doing one get per run pays. */
static long loop_kv_lookup(__u64 i, struct bench_ctx *c)
{
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	__u64 v;

	if (kv && kv_store_get(kv, bench_key(c), &v, sizeof(v)) == sizeof(v))
		c->sum += v;
	else
		c->errors++;
	return 0;
}

#define BENCH(name, fn, need_kv)						\
SEC("raw_tp")									\
int name(void *ctx)								\
{										\
	struct bench_ctx c = { .rng = seed | 1, .mask = key_mask };		\
	__u64 t0;								\
										\
	if (need_kv) {								\
		c.kv = kv_store_lookup(bpf_get_current_task_btf());		\
		if (!c.kv)							\
			return 1;						\
	}									\
	t0 = bpf_ktime_get_ns();						\
	bpf_loop(iters, fn, &c, 0);						\
	elapsed_ns = bpf_ktime_get_ns() - t0;					\
	sum = c.sum;								\
	errors = c.errors;							\
	return 0;								\
}

BENCH(bench_base, loop_base, 0)
BENCH(bench_hash_lookup, loop_hash, 0)
BENCH(bench_array_lookup, loop_array, 0)
BENCH(bench_kv_get, loop_kv, 1)
BENCH(bench_kv_lookup_get, loop_kv_lookup, 0)

char LICENSE[] SEC("license") = "Dual BSD/GPL";
