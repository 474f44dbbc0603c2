// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Known keys across a rollout, version 1: counts syscalls through KV_KNOWN(). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"
#include "rollout.h"

KV_KEY(calls, 2, __u64);	/* runs of any version */
KV_KEY(last, 3, __u64);		/* last syscall number */

SEC(ROLLOUT_SEC)
int BPF_PROG(known_v1, struct pt_regs *regs, long id)
{
	struct kv_store_value *kv = rollout_store();
	__u64 *calls, *last;

	if (!kv)
		return 0;
	calls = KV_KNOWN(kv, calls);
	last = KV_KNOWN(kv, last);
	if (calls)
		(*calls)++;
	if (last)
		*last = id;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
