// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Lifetime stress: on every syscall of the target, read and write all
 * STRESS_WORDS words of the uptr page, while user space on another CPU
 * deletes and re-registers the element (tests/test_uptr_lifetime.py).
 * The dynptr build goes through bpf_dynptr_from_mem()/read()/write(), whose
 * copies are KASAN-instrumented kernel code; the stock build uses direct
 * loads and stores.  A page unpinned while a program still used it would
 * be a use-after-free that a KASAN kernel reports.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_layout.h"

#define STRESS_WORDS 32

struct stress_value {
	struct kv_data_page __uptr *page;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct stress_value);
} stress_map SEC(".maps");

/* See kv_store.h: keeps struct kv_data_page complete in the BTF. */
struct kv_data_page *stress_anchor_page;

const volatile int target_tgid;

__u64 runs_with_page, runs_without_page, words_done, copy_errors;

SEC("tp_btf/sys_enter")
int stress_sys_enter(void *ctx)
{
	struct kv_data_page *page;
	struct stress_value *v;
	__u64 i, w, done = 0;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	v = bpf_task_storage_get(&stress_map, bpf_get_current_task_btf(), 0, 0);
	page = v ? v->page : 0;
	if (!page) {
		__sync_fetch_and_add(&runs_without_page, 1);
		return 0;
	}
#ifdef KV_STORE_DYNPTR
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(page, sizeof(*page), 0, &dp);
	for (i = 0; i < STRESS_WORDS; i++) {
		if (bpf_dynptr_read(&w, sizeof(w), &dp, i * sizeof(w), 0)) {
			__sync_fetch_and_add(&copy_errors, 1);
			break;
		}
		w++;
		if (bpf_dynptr_write(&dp, i * sizeof(w), &w, sizeof(w), 0)) {
			__sync_fetch_and_add(&copy_errors, 1);
			break;
		}
		done++;
	}
#else
	for (i = 0; i < STRESS_WORDS; i++) {
		__u64 *p = (__u64 *)page->bytes + i;

		w = *p;
		*p = w + 1;
		done++;
	}
#endif
	__sync_fetch_and_add(&runs_with_page, 1);
	__sync_fetch_and_add(&words_done, done);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
