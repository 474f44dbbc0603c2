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
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror \
	-Wno-unused-function -I$(BUILD) -Ibpf

.PHONY: all bpf clean help
all: bpf

bpf: $(BPF_OBJS)

help:
	@echo "make bpf      build the BPF objects into $(BUILD)/bpf"
	@echo "make clean    remove $(BUILD)"

$(BUILD)/vmlinux.h: $(VMLINUX_BTF)
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file $< format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c bpf/kv_store.h bpf/kv_layout.h $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/bpf/%.dynptr.bpf.o: bpf/%.bpf.c bpf/kv_store.h bpf/kv_layout.h $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -DKV_STORE_DYNPTR -c $< -o $@

clean:
	rm -rf $(BUILD)
