// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The smallest user of the store: reads key 0 as a u64 and returns it.
 * Loading it tells whether the kernel has uptr (Linux >= 6.13); its
 * .dynptr build tells whether the verifier accepts dynptr over uptr.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"

__u64 value;
long ret;

SEC("raw_tp")
int probe_get(void *ctx)
{
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	char buf[KV_MAX_VALUE_SIZE / 16] __attribute__((aligned(8)));

	if (!kv)
		return 0;
	ret = kv_store_get(kv, 0, buf, sizeof(buf));
	if (ret >= 8)
		value = *(__u64 *)buf;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
