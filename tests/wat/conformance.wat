;; The guest of the runtime conformance tests (tests/test_wasm_runtime.py).
(module
  (import "env" "host_add" (func $host_add (param i32 i32) (result i32)))
  (import "env" "host_add64" (func $host_add64 (param i64 i64) (result i64)))
  (import "env" "host_fail" (func $host_fail (param i32) (result i32)))
  (import "env" "host_reenter" (func $host_reenter (param i32) (result i32)))
  (import "env" "host_record" (func $host_record (param i32 i32)))
  (import "env" "host_nested" (func $host_nested (param i32) (result i32)))

  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  ;; Plain values.
  (func (export "add_i32") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "add_i64") (param i64 i64) (result i64)
    (i64.add (local.get 0) (local.get 1)))
  (func (export "mixed") (param i32 i64 i32) (result i64)
    (i64.add (i64.extend_i32_u (local.get 0))
             (i64.mul (local.get 1) (i64.extend_i32_u (local.get 2)))))
  (func (export "sum5") (param i32 i32 i32 i32 i32) (result i32)
    (i32.add (local.get 0)
      (i32.add (local.get 1)
        (i32.add (local.get 2) (i32.add (local.get 3) (local.get 4))))))
  (func (export "nothing"))
  (func (export "high_pointer") (result i32) (i32.const 0x80000010))

  ;; Memory.
  (func (export "load_u32") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "store_u32") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func $malloc (export "malloc") (param i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get 0)))
    (local.get $p))

  ;; Traps.
  (func (export "trap_unreachable") unreachable)
  (func (export "trap_div") (param i32) (result i32)
    (i32.div_s (i32.const 1) (local.get 0)))
  (func (export "trap_oob") (result i32) (i32.load (i32.const 0x7ffffff0)))
  (func $recurse (export "trap_stack") (param i32) (result i32)
    (call $recurse (i32.add (local.get 0) (i32.const 1))))
  (func (export "spin") (loop $forever (br $forever)))
  ;; Loops forever calling a host function that calls back into the guest.
  (func (export "spin_nested") (local $n i32)
    (loop $forever
      (local.set $n (call $host_nested (local.get $n)))
      (br $forever)))

  ;; Calls into the host.
  (func (export "call_host_add") (param i32 i32) (result i32)
    (call $host_add (local.get 0) (local.get 1)))
  (func (export "call_host_add64") (param i64 i64) (result i64)
    (call $host_add64 (local.get 0) (local.get 1)))
  (func (export "call_host_fail") (param i32) (result i32)
    (call $host_fail (local.get 0)))
  (func (export "call_host_record") (param i32 i32)
    (call $host_record (local.get 0) (local.get 1)))
  ;; The host allocates through malloc and writes a u32 there; return it.
  (func (export "call_host_reenter") (param i32) (result i32)
    (i32.load (call $host_reenter (local.get 0))))
)
