// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Demo: a program on a real hook (every syscall entry of one process) that
 * keeps its state in the store.  User space seeds the keys, the program
 * reads and writes them, user space reads the result without a syscall.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "kv_store.h"

enum demo_key {
	KEY_SYSCALLS = 1,	/* u64: syscalls seen (BPF increments) */
	KEY_LAST_NR = 2,	/* u64: number of the last syscall (BPF writes) */
	KEY_WATCH_NR = 3,	/* u32: syscall number to count (user writes) */
	KEY_WATCH_HITS = 4,	/* u64: calls of that syscall (BPF increments) */
	KEY_GREETING = 5,	/* 16 bytes: text (user writes) */
	KEY_SHOUT = 6,		/* 16 bytes: the greeting upper-cased (BPF writes) */
};

#define GREETING_SIZE 16

const volatile int target_tgid;

SEC("tp_btf/sys_enter")
int BPF_PROG(demo_sys_enter, struct pt_regs *regs, long id)
{
	char text[GREETING_SIZE] __attribute__((aligned(8)));
	struct kv_store_value *kv;
	__u64 n;
	__u32 watch;
	int i;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	kv = kv_store_lookup(bpf_get_current_task_btf());
	if (!kv)
		return 0;

	if (kv_store_get(kv, KEY_SYSCALLS, &n, sizeof(n)) == sizeof(n)) {
		n++;
		kv_store_put(kv, KEY_SYSCALLS, &n, sizeof(n));
	}
	n = id;
	kv_store_put(kv, KEY_LAST_NR, &n, sizeof(n));
	if (kv_store_get(kv, KEY_WATCH_NR, &watch, sizeof(watch)) == sizeof(watch) && watch == id &&
	    kv_store_get(kv, KEY_WATCH_HITS, &n, sizeof(n)) == sizeof(n)) {
		n++;
		kv_store_put(kv, KEY_WATCH_HITS, &n, sizeof(n));
	}
	if (kv_store_get(kv, KEY_GREETING, text, sizeof(text)) == sizeof(text)) {
		for (i = 0; i < GREETING_SIZE; i++)
			if (text[i] >= 'a' && text[i] <= 'z')
				text[i] -= 'a' - 'A';
		kv_store_put(kv, KEY_SHOUT, text, sizeof(text));
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
