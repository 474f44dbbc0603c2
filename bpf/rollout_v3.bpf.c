// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Rollout example, version 3: key 3 grows from 8 to 16 bytes. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"
#include "rollout.h"

struct last_call {
	__u64 nr;	/* same first 8 bytes as v1/v2's "last": kept by the resize */
	__u64 calls;	/* new in v3 */
};

KV_KEY(calls, 2, __u64);
KV_KEY(last, 3, struct last_call);
KV_KEY(inherited, 4, __u64);

SEC(ROLLOUT_SEC)
int BPF_PROG(rollout_v3, struct pt_regs *regs, long id)
{
	struct kv_store_value *kv = rollout_store();
	struct last_call last = {};

	if (!kv)
		return 0;
	rollout_count(kv, KV_KEY_calls);
	last.nr = id;
	kv_store_get(kv, KV_KEY_calls, &last.calls, sizeof(last.calls));
	kv_store_put(kv, KV_KEY_last, &last, sizeof(last));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
