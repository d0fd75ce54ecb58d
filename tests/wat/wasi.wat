;; The guest of the WASI tests: each export forwards to one WASI import, so
;; the test sets up memory, calls, and reads back what the shim wrote.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_res_get"
    (func $clock_res_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get"
    (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield"
    (func $sched_yield (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_unstable" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send"
    (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  (func (export "fd_write") (param i32 i32 i32 i32) (result i32)
    (call $fd_write (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "environ_sizes_get") (param i32 i32) (result i32)
    (call $environ_sizes_get (local.get 0) (local.get 1)))
  (func (export "environ_get") (param i32 i32) (result i32)
    (call $environ_get (local.get 0) (local.get 1)))
  (func (export "args_sizes_get") (param i32 i32) (result i32)
    (call $args_sizes_get (local.get 0) (local.get 1)))
  (func (export "args_get") (param i32 i32) (result i32)
    (call $args_get (local.get 0) (local.get 1)))
  (func (export "random_get") (param i32 i32) (result i32)
    (call $random_get (local.get 0) (local.get 1)))
  (func (export "clock_time_get") (param i32 i32) (result i32)
    (call $clock_time_get (local.get 0) (i64.const 1) (local.get 1)))
  (func (export "clock_res_get") (param i32 i32) (result i32)
    (call $clock_res_get (local.get 0) (local.get 1)))
  (func (export "fd_fdstat_get") (param i32 i32) (result i32)
    (call $fd_fdstat_get (local.get 0) (local.get 1)))
  (func (export "poll_oneoff") (param i32 i32 i32 i32) (result i32)
    (call $poll_oneoff (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "sched_yield") (result i32) (call $sched_yield))
  (func (export "proc_exit") (param i32) (call $proc_exit (local.get 0)) unreachable)
  (func (export "path_open") (param i32 i32) (result i32)
    (call $path_open (i32.const 3) (i32.const 0) (local.get 0) (local.get 1)
      (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 64)))
  (func (export "fd_read") (param i32) (result i32)
    (call $fd_read (local.get 0) (i32.const 0) (i32.const 0) (i32.const 64)))
  (func (export "fd_prestat_get") (param i32) (result i32)
    (call $fd_prestat_get (local.get 0) (i32.const 64)))
  (func (export "sock_send") (param i32) (result i32)
    (call $sock_send (local.get 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 64)))
)
