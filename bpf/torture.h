/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Torture test program, versions 1..3 (TORTURE_VERSION), attached to
 * tp_btf/sys_enter of one busy target process while user space changes the
 * store and rolls versions out.  Every run:
 *
 *   hits   (id 1, 8 B, all versions)       counter
 *   grown  (id 2, 8 / 16 / 24 B)           counter in the first 8 bytes
 *   multi  (id 4, 32 / 40 / 32 B)          {id, seq, a, sum}: checked, seq++
 *   r_*    (id 5, replaced every version)  tagged with the version that wrote it
 *   torn   (id 6, 8 B)                     both halves equal, written by both sides
 *
 * and counts, in `counts` (an array only BPF writes, shared by every version),
 * each write that returned 0 and each inconsistency it saw.  User space
 * compares the store with these counts at the end.
 */
#ifndef __TORTURE_H
#define __TORTURE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"

const volatile int target_tgid;
/* Iterations of an empty loop between a get and its put in one run of 8:
 * widens the window in which a broken move or rollout would lose the put. */
const volatile __u32 spin_loops;

enum torture_count {
	T_HITS,		/* hits incremented */
	T_GROWN,	/* grown incremented */
	T_MULTI,	/* multi updated */
	T_REPLACED,	/* r_* written */
	T_TORN_PUT,	/* torn written */
	T_BAD_SUM,	/* multi failed its checksum or names another key */
	T_TORN,		/* torn had different halves */
	T_FOREIGN,	/* r_* held another version's tag */
	T_EAGAIN,	/* calls that returned -EAGAIN */
	T_RUNS,		/* program runs */
	T_NCOUNTS,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, T_NCOUNTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

#define MULTI_ID 4
#define MIX1 0x9E3779B97F4A7C15ULL
#define MIX2 0xC2B2AE3D27D4EB4FULL
#define MIX3 0x165667B19E3779F9ULL

struct multi_base {
	__u64 id, seq, a, sum;
};

#if TORTURE_VERSION == 1
typedef __u64 grown_t;
typedef struct multi_base multi_t;
typedef __u64 replaced_t;
KV_KEY(r_one, 5, replaced_t);
#define REPLACED_KEY KV_KEY_r_one
#elif TORTURE_VERSION == 2
typedef struct { __u64 n, pad; } grown_t;
typedef struct { struct multi_base m; __u64 extra; } multi_t;
typedef __u64 replaced_t;
KV_KEY(r_two, 5, replaced_t);
#define REPLACED_KEY KV_KEY_r_two
#else
typedef struct { __u64 n, pad[2]; } grown_t;
typedef struct multi_base multi_t;
typedef struct { __u64 tag, pad; } replaced_t;
KV_KEY(r_three, 5, replaced_t);
#define REPLACED_KEY KV_KEY_r_three
#endif

KV_KEY(hits, 1, __u64);
KV_KEY(grown, 2, grown_t);
KV_KEY(multi, 4, multi_t);
KV_KEY(torn, 6, __u64);

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counts, &which);

	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline void seen(long ret)
{
	if (ret == -EAGAIN)
		count(T_EAGAIN);
}

static long spin_cb(__u64 i, void *ctx)
{
	return 0;
}

static __always_inline void maybe_spin(void)
{
	if (spin_loops && (bpf_get_prandom_u32() & 7) == 0)
		bpf_loop(spin_loops, spin_cb, 0, 0);
}

static __always_inline __u64 mix(__u64 id, __u64 seq, __u64 a)
{
	return (id * MIX1) ^ (seq * MIX2) ^ (a * MIX3);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(torture, struct pt_regs *regs, long nr)
{
	struct kv_store_value *kv;
	__u64 n, t, x;
	grown_t g;
	multi_t m;
	replaced_t r;
	struct multi_base *b = (struct multi_base *)&m;
	long ret;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	/* the dynptr copy path's bpf_dynptr_read() wants initialised buffers */
	__builtin_memset(&g, 0, sizeof(g));
	__builtin_memset(&m, 0, sizeof(m));
	__builtin_memset(&r, 0, sizeof(r));
	kv = kv_store_lookup(bpf_get_current_task_btf());
	if (!kv)
		return 0;
	count(T_RUNS);

	ret = kv_store_get(kv, KV_KEY_hits, &n, sizeof(n));
	if (ret == sizeof(n)) {
		n++;
		maybe_spin();
		ret = kv_store_put(kv, KV_KEY_hits, &n, sizeof(n));
		if (ret == 0)
			count(T_HITS);
	}
	seen(ret);

	ret = kv_store_get(kv, KV_KEY_grown, &g, sizeof(g));
	if (ret == sizeof(g)) {
		*(__u64 *)&g += 1;
		maybe_spin();
		ret = kv_store_put(kv, KV_KEY_grown, &g, sizeof(g));
		if (ret == 0)
			count(T_GROWN);
	}
	seen(ret);

	ret = kv_store_get(kv, KV_KEY_multi, &m, sizeof(m));
	if (ret == sizeof(m)) {
		if (b->id != MULTI_ID || b->sum != mix(b->id, b->seq, b->a)) {
			count(T_BAD_SUM);
		} else {
			b->seq++;
			b->a = b->a * 31 + nr;
			b->sum = mix(b->id, b->seq, b->a);
			maybe_spin();
			ret = kv_store_put(kv, KV_KEY_multi, &m, sizeof(m));
			if (ret == 0)
				count(T_MULTI);
		}
	}
	seen(ret);

	ret = kv_store_get(kv, REPLACED_KEY, &r, sizeof(r));
	if (ret == sizeof(r)) {
		t = *(__u64 *)&r;
		if (t && (t >> 56) != TORTURE_VERSION)
			count(T_FOREIGN);
		*(__u64 *)&r = ((__u64)TORTURE_VERSION << 56) | ((t + 1) & 0xffffffffffffffULL);
		ret = kv_store_put(kv, REPLACED_KEY, &r, sizeof(r));
		if (ret == 0)
			count(T_REPLACED);
	}
	seen(ret);

	ret = kv_store_get(kv, KV_KEY_torn, &t, sizeof(t));
	if (ret == sizeof(t)) {
		if ((t >> 32) != (t & 0xffffffff))
			count(T_TORN);
		x = bpf_get_prandom_u32();
		t = (x << 32) | x;
		ret = kv_store_put(kv, KV_KEY_torn, &t, sizeof(t));
		if (ret == 0)
			count(T_TORN_PUT);
	}
	seen(ret);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#endif
