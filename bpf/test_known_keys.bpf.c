// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Known keys driven from Python: known_bump runs with BPF_PROG_TEST_RUN in
 * the calling task and updates keys through KV_KNOWN() only (no metadata
 * read); user space checks the store and the results left in .bss.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"

struct kv_test_blob {
	__u64 a, b, c;
};

KV_KEY(counter, 10, __u64);
KV_KEY(small, 11, __u8);
KV_KEY(half, 12, __u16);
KV_KEY(blob, 13, struct kv_test_blob);
KV_KEY(unused, 14, __u64);	/* never used through KV_KNOWN: not a known key of this object */

long ret;			/* 0, or a negative errno */
__u64 seen_counter;		/* counter after the increment */
struct kv_test_blob seen_blob;	/* blob as read */

SEC("raw_tp")
int known_bump(void *ctx)
{
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	struct kv_test_blob blob;
	__u64 *counter;
	__u16 *half;
	__u8 *small;

	if (!kv) {
		ret = -3;	/* -ESRCH: no store for this task */
		return 0;
	}
	counter = KV_KNOWN(kv, counter);
	small = KV_KNOWN(kv, small);
	half = KV_KNOWN(kv, half);
	if (!counter || !small || !half) {
		ret = -EFAULT;
		return 0;
	}
	(*counter)++;
	*small += 2;
	*half += 3;
	seen_counter = *counter;
	ret = KV_KNOWN_GET(kv, blob, &blob);
	if (ret)
		return 0;
	seen_blob = blob;
	blob.c = blob.a + blob.b;
	ret = KV_KNOWN_PUT(kv, blob, &blob);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
