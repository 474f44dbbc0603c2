# Builds the BPF objects; `make help` lists the targets.
CLANG ?= clang-19
BPFTOOL ?= bpftool
BUILD ?= build
VMLINUX_BTF ?= /sys/kernel/btf/vmlinux
PYTHON ?= .venv/bin/python

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_NAMES := $(patsubst bpf/%.bpf.c,%,$(BPF_SRCS))
# Every program is built twice: the stock copy path and the dynptr path.
BPF_OBJS := $(foreach n,$(BPF_NAMES),$(BUILD)/bpf/$(n).bpf.o $(BUILD)/bpf/$(n).dynptr.bpf.o)
# Headers, and sources that other sources include (the rollout variants).
BPF_DEPS := $(wildcard bpf/*.h) bpf/rollout_v2.bpf.c bpf/bench_seq.bpf.c $(BUILD)/vmlinux.h
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror \
	-Wno-unused-function -I$(BUILD) -Ibpf

.PHONY: all bpf demo bench bench-vm bench-mutations bench-named rollout-demo rollout-timing test host-test bpffs clean help \
	kselftest kselftest-install
all: bpf

bpf: $(BPF_OBJS)

help:
	@echo "make bpf        build the BPF objects into $(BUILD)/bpf"
	@echo "make demo       run the demo (tp_btf/sys_enter keeping its state in a store)"
	@echo "make bench      the store vs a struct, hash and array maps, Python vs a map syscall;"
	@echo "                table, $(BUILD)/bench.json, bench.md, bench.png (BENCH_ARGS=--readme rewrites README)"
	@echo "make bench-vm   the same in the patched-kernel VM, with dynptr vs stock copy paths"
	@echo "make bench-mutations  grace period, sequence count, publish and rollout window costs"
	@echo "make bench-named      open() of an 8-page named store, uptrkv get/put per process"
	@echo "make rollout-demo  the RFC rollout scenario v1 -> v2 -> v3 on a live target"
	@echo "make rollout-timing  time a rollout of a 1024-key store"
	@echo "make test       host tests, then the VM tests on the patched kernel"
	@echo "make host-test  the pytest suite on the running kernel only"
	@echo "make kselftest  the suite as KTAP v1 (ksft/run.sh: exit 0 pass, 1 fail, 4 skip)"
	@echo "make kselftest-install INSTALL_PATH=DIR  collection uptrkv for the kernel's run_kselftest.sh"
	@echo "make vmtest     build (or reuse) the patched kernel, boot it, run the tests in it"
	@echo "                (not the nokernel and userspace ones the host run covers; VM_MARKERS=...)"
	@echo "make vmshell    a shell in the booted patched kernel"
	@echo "make vmdemo     the demo in the VM (./run demo there when the host kernel has no uptr)"
	@echo "make vmtest-all the whole suite in the VM (./run test there when the host kernel has no uptr)"
	@echo "make vmstress [KERNEL_DEBUG=1] [CYCLES=10000]  the uptr lifetime stress in the VM"
	@echo "make vm-repro MODE=single|multi BOOTS=20 SECONDS=30  the tracepoint int3 reproducer, tallied"
	@echo "make vm-verifier-cost [OBJECTS=\"bench_run ...\"]  per-program verifier cost (insns, states, slab) in the VM"
	@echo "make kernel     only build (or reuse) the patched kernel"
	@echo "make clean      remove $(BUILD)"
	@echo "(./run TARGET installs what is missing first)"

# bpffs for pinning; a fresh machine may not have it mounted.
bpffs:
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

demo: bpf bpffs
	$(PYTHON) -m uptrkv.cli demo

bench-named: bpf bpffs
	$(PYTHON) examples/bench_named.py

bench-mutations: bpf bpffs
	$(PYTHON) examples/bench_mutations.py

rollout-demo: bpf bpffs
	$(PYTHON) examples/rollout_demo.py

bench: bpf bpffs
	$(PYTHON) examples/bench.py $(BENCH_ARGS)

# In the guest the checkout is read-only: the bench writes to $UPTRKV_RESULTS,
# which vm/vmrun.sh shares from the host's VM_RESULTS, a directory under /tmp
# (a read-write share inside the read-only checkout may be hidden); its files
# (bench-vm.json, .md, .png) are then copied to $(BUILD)/vm-out.
# TCG emulates the CPU: fewer runs per program run and Python calls per timing.
BENCH_VM_ARGS ?= --iters 16384 --calls 1000
bench-vm: bpf
	@d=$$(mktemp -d /tmp/uptrkv-bench-vm.XXXXXX); \
	VM_RESULTS=$$d vm/vmrun.sh $(PYTHON) examples/bench.py --name bench-vm \
		--only run,get,size,copy_paths,python,setup $(BENCH_VM_ARGS) $(BENCH_ARGS); \
	rc=$$?; rm -f $$d/rc; mkdir -p $(BUILD)/vm-out && cp -r $$d/. $(BUILD)/vm-out/; rm -rf $$d; \
	echo "bench-vm: results in $(BUILD)/vm-out (exit $$rc)"; exit $$rc

rollout-timing: bpf bpffs
	$(PYTHON) examples/rollout_1024.py

host-test: bpf bpffs
	UPTRKV_REQUIRE_KERNEL=1 $(PYTHON) -m pytest -ra -m "not vmhost" tests

test: host-test vmtest

# Its copy loops must stay loops: BPF cannot call the memcpy clang would make of them.
$(BUILD)/bpf/bench_size.bpf.o $(BUILD)/bpf/bench_size.dynptr.bpf.o: BPF_CFLAGS += -fno-builtin

# KTAP v1 on stdout; ksft/run.sh exits 0 (pass), 1 (fail, or no test outcome:
# a Bail out! line says why) or 4 (all skipped), which make reports as its own
# error 2 for anything but 0.
kselftest: bpf bpffs
	ksft/run.sh

kselftest-install: bpf
	$(if $(INSTALL_PATH),,$(error set INSTALL_PATH=DIR))
	ksft/install.sh "$(INSTALL_PATH)"

$(BUILD)/vmlinux.h: $(VMLINUX_BTF)
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file $< format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_DEPS)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/bpf/%.dynptr.bpf.o: bpf/%.bpf.c $(BPF_DEPS)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -DKV_STORE_DYNPTR -c $< -o $@

clean:
	rm -rf $(BUILD)

# --- the patched kernel in a virtme-ng VM (see vm/) ---
.PHONY: kernel vmtest vmshell vm-repro vmdemo vmtest-all vmstress
kernel:
	vm/build-kernel.sh

# The suite in the guest, then the harness's own end-to-end checks (a guest
# exit code comes back; a panic, a kernel stack after a clean exit, an
# abnormal end after the command and a timeout each fail the run).
vmtest: bpf
	vm/vmtest.sh
	$(PYTHON) -m pytest -ra -m vmhost tests

# The int3 reproducer: BOOTS boots in TCG MODE (single or multi), SECONDS each.
vm-repro: bpf
	vm/repro/run.sh $(or $(MODE),single) $(or $(BOOTS),20) $(or $(SECONDS),30)

vmshell: bpf
	vm/vmtest.sh --shell

# For hosts whose kernel cannot host a store (./run demo and ./run test
# choose these there): the demo, and the whole suite with the pure-Python
# tests, in the guest.
vmdemo: bpf
	vm/vmrun.sh $(PYTHON) -m uptrkv.cli demo

# The lifetime proof: the uptr stress with CYCLES (10,000) delete/re-register
# cycles in the guest; with KERNEL_DEBUG=1 on the KASAN/lockdep kernel.
vmstress: bpf
	vm/vmrun.sh env UPTRKV_STRESS_CYCLES=$(or $(CYCLES),10000) sh vm/guest-tests.sh "not vmhost" -rA tests/test_uptr_lifetime.py

vmtest-all: bpf
	VM_MARKERS="not vmhost" vm/vmtest.sh tests
	$(PYTHON) -m pytest -ra -m vmhost tests

# What checking each BPF program costs the patched kernel's verifier
# (examples/verifier_cost.py: instructions, states, slab, time), in the VM.
.PHONY: vm-verifier-cost
vm-verifier-cost: bpf
	vm/vmrun.sh $(PYTHON) examples/verifier_cost.py $(OBJECTS)
