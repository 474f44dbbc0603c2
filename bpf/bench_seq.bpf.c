// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What the sequence count costs BPF: `rounds` get+put pairs of a key of
 * `size` bytes (16 or 64), or of an 8-byte key (no sequence count), timed
 * inside the program.  bench_seq_off.bpf.c is the same without the count.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"

__u32 key;
__u32 size;		/* 8, 16 or 64 */
__u32 rounds;
__u64 elapsed_ns;
long errors;

struct loop_ctx {
	struct kv_store_value *kv;
};

static long round_cb(__u64 i, void *data)
{
	struct loop_ctx *c = data;
	__u64 buf[8] = {};

	if (size == 16) {
		if (kv_store_get(c->kv, key, buf, 16) != 16) {
			errors++;
			return 1;
		}
		buf[0]++;
		if (kv_store_put(c->kv, key, buf, 16))
			errors++;
	} else if (size == 64) {
		if (kv_store_get(c->kv, key, buf, 64) != 64) {
			errors++;
			return 1;
		}
		buf[0]++;
		if (kv_store_put(c->kv, key, buf, 64))
			errors++;
	} else {
		if (kv_store_get(c->kv, key, buf, 8) != 8) {
			errors++;
			return 1;
		}
		buf[0]++;
		if (kv_store_put(c->kv, key, buf, 8))
			errors++;
	}
	return 0;
}

SEC("raw_tp")
int bench_seq(void *ctx)
{
	struct loop_ctx c = {};
	__u64 t0;

	c.kv = kv_store_lookup(bpf_get_current_task_btf());
	if (!c.kv)
		return 1;
	t0 = bpf_ktime_get_ns();
	bpf_loop(rounds, round_cb, &c, 0);
	elapsed_ns = bpf_ktime_get_ns() - t0;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
