// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Rollout example, version 1: keys {1, 2, 3} as in the RFC. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"
#include "rollout.h"

KV_KEY(v1_only, 1, __u64);	/* runs of v1 */
KV_KEY(calls, 2, __u64);	/* runs of any version */
KV_KEY(last, 3, __u64);		/* last syscall number */

SEC(ROLLOUT_SEC)
int BPF_PROG(rollout_v1, struct pt_regs *regs, long id)
{
	struct kv_store_value *kv = rollout_store();
	__u64 nr = id;

	if (!kv)
		return 0;
	rollout_count(kv, KV_KEY_v1_only);
	rollout_count(kv, KV_KEY_calls);
	kv_store_put(kv, KV_KEY_last, &nr, sizeof(nr));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
