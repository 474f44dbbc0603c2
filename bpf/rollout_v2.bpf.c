// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Rollout example, version 2: key 1 dropped, key 4 added: {2, 3, 4}. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"
#include "rollout.h"

KV_KEY(calls, 2, __u64);	/* runs of any version, continued from v1 */
KV_KEY(last, 3, __u64);		/* last syscall number */
KV_KEY(inherited, 4, __u64);	/* calls as v2 first found it: what v1 left */

SEC(ROLLOUT_SEC)
int BPF_PROG(rollout_v2, struct pt_regs *regs, long id)
{
	struct kv_store_value *kv = rollout_store();
	__u64 nr = id, calls, seen;

	if (!kv)
		return 0;
#ifdef ROLLOUT_V2_REJECTED
	/* deliberately unverifiable: the metadata page may be NULL */
	if (kv->meta->entry[0] == 42)
		return 1;
#endif
	if (kv_store_get(kv, KV_KEY_inherited, &seen, sizeof(seen)) == sizeof(seen) && seen == 0 &&
	    kv_store_get(kv, KV_KEY_calls, &calls, sizeof(calls)) == sizeof(calls))
		kv_store_put(kv, KV_KEY_inherited, &calls, sizeof(calls));
	rollout_count(kv, KV_KEY_calls);
	kv_store_put(kv, KV_KEY_last, &nr, sizeof(nr));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
