/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared by the rollout example versions: the hook and the task filter. */
#ifndef __ROLLOUT_H
#define __ROLLOUT_H

const volatile int target_tgid;

#ifndef ROLLOUT_SEC
#define ROLLOUT_SEC "tp_btf/sys_enter"
#endif

static __always_inline struct kv_store_value *rollout_store(void)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	return kv_store_lookup(bpf_get_current_task_btf());
}

static __always_inline void rollout_count(struct kv_store_value *kv, __u32 key)
{
	__u64 n;

	if (kv_store_get(kv, key, &n, sizeof(n)) == sizeof(n)) {
		n++;
		kv_store_put(kv, key, &n, sizeof(n));
	}
}

#endif
