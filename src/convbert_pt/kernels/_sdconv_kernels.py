"""Triton kernels of the span-based dynamic convolution (forward, softmax, backward).

Imported only by ``sdconv_triton`` (it imports Triton at module level). Legend as there:
B batch, L sequence, N heads, D head size, K taps (odd), PAD = (K - 1) // 2.

Every program owns one (b, n) pair and BLOCK_T consecutive positions t with all D channels
(BLOCK_D = next power of two >= D, masked) and all K taps (BLOCK_K >= K, masked). The taps are
unrolled (K is a compile-time constant); the K shifted (BLOCK_T, BLOCK_D) tiles a program reads
overlap in all but K - 1 rows, so past the first tap they come from cache, not from memory.
Arithmetic is fp32 whatever the storage dtype; each kernel casts once on store.

Offsets: the (b, n) base is computed in int64; offsets inside one (b, n) slice stay int32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _program_rows(L, N, BLOCK_T: tl.constexpr):
    """This program's (batch, head), its BLOCK_T row offsets and which of those rows are < L.

    A 1-D grid with t-blocks fastest: neighbouring programs share their K - 1 halo rows in cache.
    """
    num_t_blocks = tl.cdiv(L, BLOCK_T)
    pid = tl.program_id(0)
    bn = pid // num_t_blocks
    t_block = pid % num_t_blocks
    b = (bn // N).to(tl.int64)
    n = (bn % N).to(tl.int64)
    offs_t = t_block * BLOCK_T + tl.arange(0, BLOCK_T)
    return b, n, offs_t, offs_t < L


@triton.jit
def _row_softmax_stats(w_base, offs_t, t_in, stride_wl, stride_wk, K: tl.constexpr, BLOCK_K: tl.constexpr):
    """Row max and 1 / row sum of exp(w - max) over the K taps of rows ``offs_t``: (BLOCK_T,) each."""
    offs_k = tl.arange(0, BLOCK_K)
    k_in = offs_k < K
    w = tl.load(
        w_base + offs_t[:, None] * stride_wl + offs_k[None, :] * stride_wk,
        mask=t_in[:, None] & k_in[None, :],
        other=0.0,
    ).to(tl.float32)
    # Padding taps get -inf so that they weigh exactly 0; rows past L read 0s and stay finite.
    w = tl.where(k_in[None, :], w, float("-inf"))
    row_max = tl.max(w, axis=1)
    row_sum = tl.sum(tl.exp(w - row_max[:, None]), axis=1)
    return row_max, 1.0 / row_sum


@triton.jit
def sdconv_forward_kernel(
    v_ptr,
    w_ptr,
    out_ptr,
    L,
    N,
    D,
    stride_vb,
    stride_vl,
    stride_vn,
    stride_vd,
    stride_wb,
    stride_wl,
    stride_wn,
    stride_wk,
    stride_ob,
    stride_ol,
    stride_on,
    stride_od,
    K: tl.constexpr,
    PAD: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[b, t, n, :] = sum_j softmax(w[b, t, n, :])[j] * v[b, t + j - PAD, n, :]."""
    b, n, offs_t, t_in = _program_rows(L, N, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    d_in = offs_d < D
    v_base = v_ptr + b * stride_vb + n * stride_vn
    w_base = w_ptr + b * stride_wb + n * stride_wn
    out_base = out_ptr + b * stride_ob + n * stride_on

    row_max, inv_sum = _row_softmax_stats(w_base, offs_t, t_in, stride_wl, stride_wk, K, BLOCK_K)
    w_rows = w_base + offs_t * stride_wl  # (BLOCK_T,) pointers to tap 0 of the own rows
    v_cols = v_base + offs_d[None, :] * stride_vd  # (1, BLOCK_D); + row * stride_vl below
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for j in tl.static_range(K):
        w_j = tl.load(w_rows + j * stride_wk, mask=t_in, other=0.0).to(tl.float32)
        p_j = tl.exp(w_j - row_max) * inv_sum  # (BLOCK_T,) softmax weight of tap j
        # the value row tap j reads; zero padding outside [0, L). Rows t >= L may read real
        # values: their accumulators are never stored.
        src = offs_t + (j - PAD)
        src_in = (src >= 0) & (src < L)
        v = tl.load(v_cols + src[:, None] * stride_vl, mask=src_in[:, None] & d_in[None, :], other=0.0)
        acc += p_j[:, None] * v.to(tl.float32)
    tl.store(
        out_base + offs_t[:, None] * stride_ol + offs_d[None, :] * stride_od,
        acc.to(out_ptr.dtype.element_ty),
        mask=t_in[:, None] & d_in[None, :],
    )


@triton.jit
def sdconv_softmax_kernel(
    w_ptr,
    p_ptr,
    L,
    N,
    stride_wb,
    stride_wl,
    stride_wn,
    stride_wk,
    stride_pb,
    stride_pl,
    stride_pn,
    stride_pk,
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """p[b, t, n, :] = softmax(w[b, t, n, :]) in fp32, the same arithmetic as the forward kernel.

    The backward needs the weights of the rows around its own (t - j + PAD); writing them once
    costs (B, L, N, K) fp32, 1/D of the activations, instead of K softmaxes per row.
    """
    b, n, offs_t, t_in = _program_rows(L, N, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    k_in = offs_k < K
    w_base = w_ptr + b * stride_wb + n * stride_wn
    p_base = p_ptr + b * stride_pb + n * stride_pn

    row_max, inv_sum = _row_softmax_stats(w_base, offs_t, t_in, stride_wl, stride_wk, K, BLOCK_K)
    w = tl.load(
        w_base + offs_t[:, None] * stride_wl + offs_k[None, :] * stride_wk,
        mask=t_in[:, None] & k_in[None, :],
        other=0.0,
    ).to(tl.float32)
    p = tl.exp(w - row_max[:, None]) * inv_sum[:, None]
    tl.store(
        p_base + offs_t[:, None] * stride_pl + offs_k[None, :] * stride_pk,
        p,
        mask=t_in[:, None] & k_in[None, :],
    )


@triton.jit
def sdconv_backward_kernel(
    v_ptr,
    p_ptr,
    do_ptr,
    dv_ptr,
    dw_ptr,
    L,
    N,
    D,
    stride_vb,
    stride_vl,
    stride_vn,
    stride_vd,
    stride_pb,
    stride_pl,
    stride_pn,
    stride_pk,
    stride_dob,
    stride_dol,
    stride_don,
    stride_dod,
    stride_dvb,
    stride_dvl,
    stride_dvn,
    stride_dvd,
    stride_dwb,
    stride_dwl,
    stride_dwn,
    stride_dwk,
    K: tl.constexpr,
    PAD: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Both gradients for the rows of one program, with no atomics.

    dP[t, j] = <dout[t, :], v[t + j - PAD, :]>;  dw[t, :] = p[t, :] * (dP[t, :] - <p[t, :], dP[t, :]>)
    dv[s, :] = sum_j p[s - j + PAD, j] * dout[s - j + PAD, :]   (the rows s of this program)
    """
    b, n, offs_t, t_in = _program_rows(L, N, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    offs_k = tl.arange(0, BLOCK_K)
    d_in = offs_d < D
    k_in = offs_k < K
    v_base = v_ptr + b * stride_vb + n * stride_vn
    p_base = p_ptr + b * stride_pb + n * stride_pn
    do_base = do_ptr + b * stride_dob + n * stride_don
    dv_base = dv_ptr + b * stride_dvb + n * stride_dvn
    dw_base = dw_ptr + b * stride_dwb + n * stride_dwn

    do_cols = do_base + offs_d[None, :] * stride_dod  # (1, BLOCK_D); + row * stride_dol below
    v_cols = v_base + offs_d[None, :] * stride_vd
    p_rows = p_base + offs_t * stride_pl  # (BLOCK_T,); + (row shift) * stride_pl + j * stride_pk below
    d_out = tl.load(do_cols + offs_t[:, None] * stride_dol, mask=t_in[:, None] & d_in[None, :], other=0.0)
    d_out = d_out.to(tl.float32)  # 0 on rows t >= L, so those rows add nothing below
    dp = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
    dv = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for j in tl.static_range(K):
        # Own rows as outputs: tap j read the value row t + j - PAD.
        src = offs_t + (j - PAD)
        src_in = (src >= 0) & (src < L)
        v = tl.load(v_cols + src[:, None] * stride_vl, mask=src_in[:, None] & d_in[None, :], other=0.0)
        dp_j = tl.sum(d_out * v.to(tl.float32), axis=1)  # (BLOCK_T,)
        dp = tl.where(offs_k[None, :] == j, dp_j[:, None], dp)
        # Own rows as values: they were read by tap j of the output row s - j + PAD. Rows s >= L
        # may gather real terms: their dv is never stored.
        dst = offs_t - (j - PAD)
        dst_in = (dst >= 0) & (dst < L)
        p_j = tl.load(p_rows + ((PAD - j) * stride_pl + j * stride_pk), mask=dst_in, other=0.0)
        dst_mask = dst_in[:, None] & d_in[None, :]
        d_out_j = tl.load(do_cols + dst[:, None] * stride_dol, mask=dst_mask, other=0.0)
        dv += p_j[:, None] * d_out_j.to(tl.float32)

    p = tl.load(
        p_base + offs_t[:, None] * stride_pl + offs_k[None, :] * stride_pk,
        mask=t_in[:, None] & k_in[None, :],
        other=0.0,
    )
    # softmax backward; padding taps have p = 0 and dp = 0, so they add nothing to the row sum
    dw = p * (dp - tl.sum(p * dp, axis=1)[:, None])
    tl.store(
        dv_base + offs_t[:, None] * stride_dvl + offs_d[None, :] * stride_dvd,
        dv.to(dv_ptr.dtype.element_ty),
        mask=t_in[:, None] & d_in[None, :],
    )
    tl.store(
        dw_base + offs_t[:, None] * stride_dwl + offs_k[None, :] * stride_dwk,
        dw.to(dw_ptr.dtype.element_ty),
        mask=t_in[:, None] & k_in[None, :],
    )
