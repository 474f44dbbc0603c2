// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Lets user space drive the BPF-side API deterministically: set the
 * arguments in .bss, run the program with BPF_PROG_TEST_RUN (a raw_tp
 * program runs synchronously in the calling task, so it finds the caller's
 * store), read the result back from .bss.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"

enum kv_test_op {
	KV_TEST_GET = 1,
	KV_TEST_PUT = 2,
	KV_TEST_DELETE = 3,
};

int op;
__u32 key;
__u32 size;		/* buffer size handed to get/put */
long ret;		/* what the API returned; -ESRCH when no store */
__u64 buf[KV_MAX_VALUE_SIZE / 8];

SEC("raw_tp")
int kv_ops(void *ctx)
{
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	__u32 n = size;

	if (!kv) {
		ret = -3; /* -ESRCH */
		return 0;
	}
	if (n > KV_MAX_VALUE_SIZE)
		n = KV_MAX_VALUE_SIZE;
	switch (op) {
	case KV_TEST_GET:
		ret = kv_store_get(kv, key, buf, n);
		break;
	case KV_TEST_PUT:
		ret = kv_store_put(kv, key, buf, n);
		break;
	case KV_TEST_DELETE:
		ret = kv_store_delete(kv, key);
		break;
	default:
		ret = -EINVAL;
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
