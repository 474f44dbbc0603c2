// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * An ops program any loader can run (bpftool, a C agent): it needs no
 * configuration.  At every syscall entry of a task that has a store it
 * counts the syscall and records its number; tasks without one pay a
 * single task storage lookup.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"

KV_KEY(calls, 1, __u64);	/* syscalls seen */
KV_KEY(last_nr, 2, __u64);	/* number of the last one */

SEC("tp_btf/sys_enter")
int BPF_PROG(ops_counter, struct pt_regs *regs, long id)
{
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	__u64 n;

	if (!kv)
		return 0;
	if (kv_store_get(kv, KV_KEY_calls, &n, sizeof(n)) == sizeof(n)) {
		n++;
		kv_store_put(kv, KV_KEY_calls, &n, sizeof(n));
	}
	n = id;
	kv_store_put(kv, KV_KEY_last_nr, &n, sizeof(n));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
