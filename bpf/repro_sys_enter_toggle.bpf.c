// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The smallest tp_btf/sys_enter program: counts syscalls, touches no store.
 * vm/repro/tracepoint_toggle.py attaches and detaches it in a tight loop
 * while another CPU makes syscalls, which flips the sys_enter static key
 * (live kernel text patching through int3) over and over: the reproducer
 * for the guest panics seen under multi-threaded TCG.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

__u64 hits;

SEC("tp_btf/sys_enter")
int repro_sys_enter(void *ctx)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
