// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Reads keys 1..CRASH_KEYS of its target's store at every syscall entry and
 * counts what it sees, while tests kill the store's writer at every step
 * (tests/test_named_crash.py).  Test values are one byte repeated, whose low
 * 6 bits are the key: a torn copy, or bytes of another key (space reused
 * too early), shows as a "bad" read.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"

#define CRASH_KEYS 48
#define CRASH_MAX 32

const volatile int target_tgid;

__u64 runs, good, bad, again, missing;
__u32 bad_key, bad_byte, bad_size;

SEC("tp_btf/sys_enter")
int BPF_PROG(crash_reader, struct pt_regs *regs, long id)
{
	__u8 buf[CRASH_MAX] __attribute__((aligned(8)));
	struct kv_store_value *kv;
	__u32 key;
	long n;
	int i;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	kv = kv_store_lookup(bpf_get_current_task_btf());
	if (!kv)
		return 0;
	__sync_fetch_and_add(&runs, 1);
	for (key = 1; key <= CRASH_KEYS; key++) {
		n = kv_store_get(kv, key, buf, sizeof(buf));
		if (n == -EAGAIN) {
			__sync_fetch_and_add(&again, 1);
			continue;
		}
		if (n <= 0 || n > CRASH_MAX) {
			__sync_fetch_and_add(&missing, 1);
			continue;
		}
		for (i = 0; i < CRASH_MAX && i < n; i++) {
			if (buf[i] != buf[0] || (buf[0] & 63) != key) {
				bad_key = key;
				bad_byte = buf[i];
				bad_size = n;
				__sync_fetch_and_add(&bad, 1);
				break;
			}
		}
		if (i == n)
			__sync_fetch_and_add(&good, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
