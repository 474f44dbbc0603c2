// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Lifetime stress: on every syscall of the target, read and write every
 * word of the uptr page twice, while user space on another CPU deletes and
 * re-registers the element (tests/test_uptr_lifetime.py).
 *
 * A run looks its element up, makes a first pass over the page, looks the
 * element up again and makes a second pass.  User space gives every
 * registration a new generation number (stress_value.gen, never changed
 * while the element lives), so when the second lookup finds no element or
 * one of another generation, the element this run started with was deleted
 * after the run had taken its page: the second pass then used a page whose
 * element the kernel had already deleted, which only the run's RCU read
 * section keeps pinned.  Such runs are counted in runs_overlapped.
 *
 * The dynptr build goes through bpf_dynptr_from_mem()/read()/write(), whose
 * copies are KASAN-instrumented kernel code: a page unpinned and freed
 * under an overlapped run would be reported there.  The stock build uses
 * direct loads and stores, JIT-compiled code that KASAN does not check.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_layout.h"

#define STRESS_WORDS (KV_PAGE_SIZE / 8)		/* the whole page */

struct stress_value {
	struct kv_data_page __uptr *page;
	__u64 gen;		/* the registration's generation, set by user space */
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

__u64 runs_with_page, runs_without_page, runs_overlapped, words_done, copy_errors;

#ifdef KV_STORE_DYNPTR
/* Read and increment every word of the page through the dynptr. */
static __always_inline __u64 touch_page(struct bpf_dynptr *dp)
{
	__u64 i, w, done = 0;

	for (i = 0; i < STRESS_WORDS; i++) {
		if (bpf_dynptr_read(&w, sizeof(w), dp, i * sizeof(w), 0)) {
			__sync_fetch_and_add(&copy_errors, 1);
			break;
		}
		w++;
		if (bpf_dynptr_write(dp, i * sizeof(w), &w, sizeof(w), 0)) {
			__sync_fetch_and_add(&copy_errors, 1);
			break;
		}
		done++;
	}
	return done;
}
#else
/* Read and increment every word of the page with direct loads and stores. */
static __always_inline __u64 touch_page(struct kv_data_page *page)
{
	__u64 i, done = 0;

	for (i = 0; i < STRESS_WORDS; i++) {
		__u64 *p = (__u64 *)page->bytes + i;

		*p = *p + 1;
		done++;
	}
	return done;
}
#endif

SEC("tp_btf/sys_enter")
int stress_sys_enter(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kv_data_page *page;
	struct stress_value *v;
	__u64 gen, done;
	int gone;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	v = bpf_task_storage_get(&stress_map, task, 0, 0);
	page = v ? v->page : 0;
	if (!page) {
		__sync_fetch_and_add(&runs_without_page, 1);
		return 0;
	}
	gen = v->gen;
#ifdef KV_STORE_DYNPTR
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(page, sizeof(*page), 0, &dp);
#define PAGE_ARG (&dp)
#else
#define PAGE_ARG page
#endif
	done = touch_page(PAGE_ARG);
	/* Was the element deleted meanwhile?  No element, or a later registration's. */
	v = bpf_task_storage_get(&stress_map, task, 0, 0);
	gone = !v || v->gen != gen;
	/* The page again: after its element's deletion when gone is set. */
	done += touch_page(PAGE_ARG);
	if (gone)
		__sync_fetch_and_add(&runs_overlapped, 1);
	__sync_fetch_and_add(&runs_with_page, 1);
	__sync_fetch_and_add(&words_done, done);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
