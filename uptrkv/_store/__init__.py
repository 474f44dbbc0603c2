"""The parts of uptrkv.store.KVStore, one concept per module (the class itself is in uptrkv.store).

entries   the metadata page: checks, atomic entry changes, allocation sync, inspection
values    get/put fast and checked paths, put_many, delete
holds     keys loaded programs resolved (known keys)
moves     resize, convert, compact: moves that lose no BPF write
staging   write now, publish later
"""
