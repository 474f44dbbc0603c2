// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * A deliberately slow writer, to test what a grace period guarantees: it
 * reads the metadata entry of `slow_key`, spins for `rounds` times `spin` loop iterations,
 * then writes `slow_value` where the entry pointed (as kv_store_put does,
 * with its nanoseconds between the entry read and the store stretched to
 * milliseconds).  One shot per `armed` = 1, in `target_tgid`'s syscalls.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"

const volatile int target_tgid;
__u64 armed;
__u32 slow_key;
__u32 spin;
__u32 rounds = 1;	/* bpf_loop()s of `spin` each: the test sizes the window to the machine */
__u64 slow_value;
__u64 started, finished;
__u64 t_start, t_end;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */

static long spin_cb(__u64 i, void *ctx)
{
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(slow_put, struct pt_regs *regs, long nr)
{
	struct kv_store_value *kv;
	struct kv_data_page *page;
	long err = 0;
	__u64 off;
	__u32 e, r;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	if (!__sync_val_compare_and_swap(&armed, 1, 0))
		return 0;
	kv = kv_store_lookup(bpf_get_current_task_btf());
	if (!kv)
		return 0;
	e = kv_store_entry(kv, slow_key, &err);
	if (!e || kv_meta_size(e) != 8)
		return 0;
	page = kv_store_page(kv, kv_meta_page(e));
	if (!page)
		return 0;
	t_start = bpf_ktime_get_ns();
	__sync_fetch_and_add(&started, 1);
	for (r = 0; r < 64; r++) {
		if (r >= rounds)
			break;
		bpf_loop(spin, spin_cb, 0, 0);
	}
	off = kv_meta_off(e);
	kv_opaque(off);
	if (off <= KV_PAGE_SIZE - 8)
		*(__u64 *)((void *)page + off) = slow_value;
	t_end = bpf_ktime_get_ns();
	__sync_fetch_and_add(&finished, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
