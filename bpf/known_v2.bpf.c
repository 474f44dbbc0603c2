// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Known keys across a rollout, version 2: key 3 grows to 16 bytes (a move, new constants). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"
#include "rollout.h"

struct known_last {
	__u64 nr;	/* v1's 8 bytes, kept by the resize */
	__u64 calls;	/* new in v2: calls at that syscall */
};

KV_KEY(calls, 2, __u64);
KV_KEY(last, 3, struct known_last);

SEC(ROLLOUT_SEC)
int BPF_PROG(known_v2, struct pt_regs *regs, long id)
{
	struct kv_store_value *kv = rollout_store();
	struct known_last *last;
	__u64 *calls;

	if (!kv)
		return 0;
	calls = KV_KNOWN(kv, calls);
	last = KV_KNOWN(kv, last);
	if (!calls || !last)
		return 0;
	(*calls)++;
	last->nr = id;
	last->calls = *calls;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
