// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What the verifier patch in vm/patches/ lets bpf_dynptr_from_mem() take:
 * the register loaded from a uptr field, and nothing else.  One program per
 * case, none loaded by default ("?" sections); tests/test_verifier_patch.py
 * loads them one at a time and checks each verdict and verifier message on
 * the running kernel.
 *
 *   uptr_read_write      accepted (patched): reads and writes a uptr page
 *                        through a dynptr; run with BPF_PROG_TEST_RUN
 *   uptr_no_null_check   the uptr before its NULL check
 *   uptr_dynptr_slice    a slice of a dynptr over the uptr page
 *   ringbuf_slice_chain  a dynptr from a ring buffer dynptr's slice, which
 *                        would outlive the record once it is submitted
 *   ringbuf_record       a ring buffer record
 *   global_subprog_arg   the uptr page passed to a global subprogram
 *   rdonly_slice         read-only memory (a bpf_dynptr_slice() slice)
 *   rdonly_map_value     a read-only map value (.rodata)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} ringbuf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kv_data_page);
} plain_pages SEC(".maps");

extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u64 offset,
			      void *buffer, __u64 buffer__szk) __ksym;

/* uptr_read_write: copy the u64 at read_off to write_off, plus one. */
__u64 read_off, write_off;
long read_ret = 1, write_ret = 1;
const volatile __u8 rodata_bytes[64];

static __always_inline struct kv_data_page *first_page(void)
{
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());

	return kv ? kv->page0 : 0;
}

SEC("?raw_tp")
int uptr_read_write(void *ctx)
{
	struct kv_data_page *page = first_page();
	struct bpf_dynptr dp;
	__u64 val = 0;

	if (!page)
		return 1;
	bpf_dynptr_from_mem(page, sizeof(*page), 0, &dp);
	read_ret = bpf_dynptr_read(&val, sizeof(val), &dp, read_off, 0);
	val++;
	write_ret = bpf_dynptr_write(&dp, write_off, &val, sizeof(val), 0);
	return 0;
}

SEC("?raw_tp")
int uptr_no_null_check(void *ctx)
{
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	struct bpf_dynptr dp;

	if (!kv)
		return 0;
	bpf_dynptr_from_mem(kv->page0, sizeof(*kv->page0), 0, &dp);
	return 0;
}

SEC("?raw_tp")
int uptr_dynptr_slice(void *ctx)
{
	struct kv_data_page *page = first_page();
	struct bpf_dynptr dp, dp2;
	__u8 *slice;

	if (!page)
		return 0;
	bpf_dynptr_from_mem(page, sizeof(*page), 0, &dp);
	slice = bpf_dynptr_data(&dp, 0, 64);
	if (!slice)
		return 0;
	bpf_dynptr_from_mem(slice, 64, 0, &dp2);
	return 0;
}

SEC("?raw_tp")
int ringbuf_slice_chain(void *ctx)
{
	struct bpf_dynptr rb, dp;
	__u64 val = 0;
	__u8 *slice;

	bpf_ringbuf_reserve_dynptr(&ringbuf, 64, 0, &rb);
	slice = bpf_dynptr_data(&rb, 0, 64);
	if (!slice) {
		bpf_ringbuf_discard_dynptr(&rb, 0);
		return 0;
	}
	bpf_dynptr_from_mem(slice, 64, 0, &dp);
	bpf_ringbuf_submit_dynptr(&rb, 0);
	/* The record belongs to the consumer now; dp must not reach it. */
	bpf_dynptr_write(&dp, 0, &val, sizeof(val), 0);
	return 0;
}

SEC("?raw_tp")
int ringbuf_record(void *ctx)
{
	struct bpf_dynptr dp;
	__u8 *rec;

	rec = bpf_ringbuf_reserve(&ringbuf, 64, 0);
	if (!rec)
		return 0;
	bpf_dynptr_from_mem(rec, 64, 0, &dp);
	bpf_ringbuf_discard(rec, 0);
	return 0;
}

/* Verified once for every caller: the argument may be any memory. */
__attribute__((noinline)) int dynptr_from_arg(struct kv_data_page *page)
{
	struct bpf_dynptr dp;

	if (!page)
		return 0;
	return bpf_dynptr_from_mem(page, sizeof(*page), 0, &dp);
}

SEC("?raw_tp")
int global_subprog_arg(void *ctx)
{
	struct kv_data_page *page = first_page();

	if (!page)
		return 0;
	return dynptr_from_arg(page);
}

SEC("?raw_tp")
int rdonly_slice(void *ctx)
{
	struct bpf_dynptr dp, dp2;
	__u32 zero = 0;
	__u8 *slice;
	void *value;

	value = bpf_map_lookup_elem(&plain_pages, &zero);
	if (!value)
		return 0;
	/* A map value makes a dynptr on every kernel; its bpf_dynptr_slice() is read-only. */
	bpf_dynptr_from_mem(value, sizeof(struct kv_data_page), 0, &dp);
	slice = bpf_dynptr_slice(&dp, 0, 0, 64);
	if (!slice)
		return 0;
	bpf_dynptr_from_mem(slice, 64, 0, &dp2);
	return 0;
}

SEC("?raw_tp")
int rdonly_map_value(void *ctx)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem((void *)rodata_bytes, sizeof(rodata_bytes), 0, &dp);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
