/* SPDX-License-Identifier: GPL-2.0 */
/* Stands in for the selftests' bpf_experimental.h when vm/build-kernel.sh
 * compiles progs/uptr_failure.c: with pahole < 1.26 (Debian 12 has 1.24)
 * the kernel's BTF, and so vmlinux.h, has no kfunc declarations, and the
 * real header's bpf_obj_new() needs them. It declares only what that file
 * uses, through the _impl kfuncs, whose prototypes this kernel's BTF has.
 */
#ifndef UPTRKV_SELFTESTS_BPF_EXPERIMENTAL_H
#define UPTRKV_SELFTESTS_BPF_EXPERIMENTAL_H

#include <bpf/bpf_core_read.h>

extern void *bpf_obj_new_impl(__u64 local_type_id, void *meta) __ksym;
extern void bpf_obj_drop_impl(void *kptr, void *meta) __ksym;

#define bpf_obj_new(type) ((type *)bpf_obj_new_impl(bpf_core_type_id_local(type), NULL))
#define bpf_obj_drop(kptr) bpf_obj_drop_impl(kptr, NULL)

#endif
