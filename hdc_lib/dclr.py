"""DCLR: dual contrastive learning for spatio-temporal representation (Ding, Qian & Xiong, ACM MM 2022).

What the official code (github.com/Mark12Ding/DCLR) does, with its bugs fixed (docs/methods.md,
"DCLR (as implemented)" and, bug by bug, docs/methods.md, "DCLR official code: bugs fixed"):

1. Static / dynamic split of the input. From a window of T*stride raw frames: the RGB clip v takes
   every stride-th frame; the static clip s repeats one raw frame of the window T times (own crop
   and colour augmentation); the dynamic clip d = v - roll(v, 1, time) is taken on the augmented,
   normalised v, so it is pixel-aligned with v.
2. Activation maps A_x = sum over channels of the last-stage map f(x) (non-negative after ReLU),
   computed without gradient, by the momentum encoder when there is one.
3. Feature-space decoupling: the RGB map is attention-pooled with the other modes' maps,
       F_s(v) = sum_p f(v)(p) A_s(p) / sum_p A_s(p),   F_d(v) likewise with A_d.
4. Five heads and five contrasts, z from the query clip and k from the other clip of the video:
       L = l(z_vv, k_vv) + l(z_vs, k_sv) + l(z_sv, k_vs) + l(z_vd, k_dv) + l(z_dv, k_vd).
5. Cross-video search (with a queue): the top-k queue entries nearest in static (dynamic) embedding
   are extra positives of the static (dynamic) terms, the sum of both searches for vv.
6. Activation alignment, **our reading** of the figure's "A_s + A_d = A_v" (the official term cannot
   run): L_align = mean_{b,p} (Â_v(p) - Â_{s+d}(p))^2 with gradient, weight 0.1. Each map is
   normalised to mean 1 over its P positions, Â = A / mean_p A, as the official code normalises its
   maps: the term is then O(1) whatever P and the activations' scale are (0.5 for independent
   uniform maps: Var(2U) + Var(U1 + U2) = 1/3 + 1/6), so weight 0.1 means what it says. Maps
   normalised to sum 1 would make it P^2 times smaller: weighted, on the toy world's 2x4x4 maps at
   initialisation (notebook 05, contrastive loss 20.0), 3.0e-6 at sum 1 and 3.1e-3 at mean 1 (small
   because the maps are still nearly flat, not because of their normalisation).

Fixed relative to the official code: maps and keys are computed in the same key pass (with shuffle
BN when `shuffle_bn_groups` > 0), so they can never be misaligned; no sizes are hard-coded; the
search uses the static/dynamic key queues themselves (the official code keeps two extra queues
that hold the same embeddings, taken one EMA step earlier).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hdc_lib.contrastive import ContrastConfig, ContrastiveMethod

HEADS = ("vv", "vs", "vd", "sv", "dv")
# (query head, key head): the five contrasts of the loss, in the official order.
CONTRASTS = (("vv", "vv"), ("vs", "sv"), ("sv", "vs"), ("vd", "dv"), ("dv", "vd"))
# Which cross-video search supplies the extra positives of each contrast.
SEARCH_OF = {"vv": "both", "vs": "static", "sv": "static", "vd": "dynamic", "dv": "dynamic"}


@dataclass
class DCLRConfig(ContrastConfig):
    temperature: float = 0.07        # the paper's; the toy rows all run at 0.1 (configs/toy/dclr.yaml)
    level: str = "layer4"            # the stage whose maps split the feature space
    circular_difference: bool = True  # d_0 = v_0 - v_{T-1} as the official code; False: d_0 = 0
    cross_video: bool | None = None   # top-k queue positives; None: on with a queue (it needs one)
    topk: int = 5
    align_weight: float = 0.1
    # window_offset (inherited): (lo, hi) frames between the two raw windows' starts, as every method
    # reads it; None: the official sampler (two distinct starts anywhere, the windows may overlap).

    def __post_init__(self):
        super().__post_init__()
        if self.speed_strides:
            raise ValueError("DCLR samples raw windows and subsamples them itself: use clip_stride, "
                             "not speed_strides")
        if self.cross_video is None:
            self.cross_video = bool(self.queue_size)
        elif self.cross_video and not self.queue_size:
            raise ValueError("cross_video searches the queue for extra positives: set queue_size > 0 "
                             "or cross_video false")


# -- the helpers the notebooks use ------------------------------------------------------------
def static_clip(window: torch.Tensor, frame_index: torch.Tensor, num_frames: int) -> torch.Tensor:
    """One raw frame of each window repeated `num_frames` times: the static scene.

    window (B, L, H, W, C) raw frames; frame_index (B,) ints in [0, L). Returns (B, T, H, W, C).
    """
    frames = window[torch.arange(window.shape[0], device=window.device), frame_index]
    return frames.unsqueeze(1).expand(-1, num_frames, -1, -1, -1).contiguous()


def dynamic_clip(clip: torch.Tensor, circular: bool = True) -> torch.Tensor:
    """Frame differences of a (B, C, T, H, W) clip: the dynamic motion, same shape as the clip.

    d_t = v_t - v_{t-1}; circular (official): d_0 = v_0 - v_{T-1}; otherwise d_0 = 0.
    """
    difference = clip - torch.roll(clip, shifts=1, dims=2)
    if not circular:
        difference[:, :, 0] = 0
    return difference


def activation_map(feature_map: torch.Tensor) -> torch.Tensor:
    """A(p) = sum_c f_c(p): (B, C, T, H, W) -> (B, T, H, W), non-negative for post-ReLU maps."""
    return feature_map.sum(dim=1)


def activation_pool(feature_map: torch.Tensor, amap: torch.Tensor) -> torch.Tensor:
    """F = sum_p f(p) A(p) / sum_p A(p): (B, C, T, H, W) pooled with weights (B, T, H, W) -> (B, C).

    A map with no mass at all (possible when every unit of a sample is silent) pools uniformly.
    """
    weights = amap.flatten(1)
    total = weights.sum(dim=1, keepdim=True)
    uniform = torch.full_like(weights, 1.0 / weights.shape[1])
    weights = torch.where(total > 0, weights / total.clamp_min(torch.finfo(weights.dtype).tiny), uniform)
    return torch.einsum("bcp,bp->bc", feature_map.flatten(2), weights)


def normalised_map(amap: torch.Tensor) -> torch.Tensor:
    """Â(p) = A(p) / mean_p A(p), per sample, flattened to (B, P): mean 1, so 1 is an average
    position and a flat map is all ones. A map with no mass stays zero."""
    flat = amap.flatten(1)
    return flat / flat.mean(dim=1, keepdim=True).clamp_min(1e-12)


def alignment_loss(a_v: torch.Tensor, a_s: torch.Tensor, a_d: torch.Tensor) -> torch.Tensor:
    """L_align = mean over samples b and positions p of (Â_v(p) - Â_{s+d}(p))^2 (scalar), for
    activation maps (B, T, H, W) of the RGB, static and dynamic clips; gradient flows to all three."""
    # Mean-1 maps: the squared differences are O(1), not O(1/P^2) as for maps that sum to 1.
    return (normalised_map(a_v) - normalised_map(a_s + a_d)).pow(2).mean()


class DCLR(ContrastiveMethod):
    def __init__(self, cfg: DCLRConfig | None = None):
        cfg = cfg or DCLRConfig()
        super().__init__(cfg, head_stages={h: cfg.level for h in HEADS}, queues=HEADS)

    def clip_request(self) -> dict:
        """Two raw windows of T * stride consecutive frames (the static frame may be any of them),
        `window_offset` frames apart when it is set, else where the official sampler puts them."""
        cfg = self.cfg
        placement = {} if cfg.window_offset is None else {"offset": tuple(cfg.window_offset)}
        return {"num_clips": 2, "num_frames": cfg.clip_frames * cfg.clip_stride, "stride": 1, **placement}

    def make_views(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """windows uint8 (B, 2, L, H, W, C) -> v, s, d of each window (query 1, key 2).

        The static frame index is drawn once per video and used in both windows (as the official
        code does); v and s get independent augmentations, d inherits v's.
        """
        cfg = self.cfg
        batch, _, length = windows.shape[:3]
        frame_index = torch.randint(length, (batch,), generator=generator,
                                    device=generator.device if generator is not None else "cpu")
        frame_index = frame_index.to(windows.device)
        views = {}
        for j in (1, 2):
            window = windows[:, j - 1]
            views[f"v{j}"], _ = self.augment(window[:, ::cfg.clip_stride], generator=generator)
            # The static clip's frames and their augmentation are identical over time: augment the
            # one frame and repeat it (the same result as augmenting T copies, at 1/T of the work).
            still, _ = self.augment(static_clip(window, frame_index, 1), generator=generator)
            views[f"s{j}"] = still.expand_as(views[f"v{j}"])
            views[f"d{j}"] = dynamic_clip(views[f"v{j}"], circular=cfg.circular_difference)
        return views

    def _modes(self, encoder, v, s, d):
        """One backbone pass over [v; s; d] (shared BatchNorm statistics, as the official code)."""
        maps = encoder["backbone"].features(torch.cat([v, s, d]), stages=(self.cfg.level,))
        return maps[self.cfg.level].chunk(3)

    def _embed(self, encoder, f_v, f_s, f_d, a_s, a_d) -> dict:
        """The five embeddings from the three feature maps and the static/dynamic maps."""
        heads = encoder["heads"]
        return {"vv": heads["vv"](f_v), "vs": heads["vs"](activation_pool(f_v, a_s)),
                "vd": heads["vd"](activation_pool(f_v, a_d)), "sv": heads["sv"](f_s),
                "dv": heads["dv"](f_d)}

    def _keys(self, v, s, d) -> dict:
        """Key embeddings of clip 2 by the momentum encoder (with shuffle BN when configured).

        The maps are computed inside the same pass as the features they pool, so a key's F_s(v),
        F_d(v) always use that key's own maps (the official code pairs them wrongly).
        """
        def encode(v, s, d):
            f_v, f_s, f_d = self._modes(self.momentum_encoder, v, s, d)
            return self._embed(self.momentum_encoder, f_v, f_s, f_d, activation_map(f_s), activation_map(f_d))

        return self.momentum_keys(encode, v, s, d)

    def forward(self, views: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        f_v, f_s, f_d = self._modes(self.online, views["v1"], views["s1"], views["d1"])
        if self.momentum_encoder is None:
            maps = [activation_map(f).detach() for f in (f_v, f_s, f_d)]
            search = None
        else:
            with torch.no_grad():
                m_v, m_s, m_d = self._modes(self.momentum_encoder, views["v1"], views["s1"], views["d1"])
                maps = [activation_map(f) for f in (m_v, m_s, m_d)]
                heads = self.momentum_encoder["heads"]
                search = {"static": F.normalize(heads["sv"](m_s), dim=1),
                          "dynamic": F.normalize(heads["dv"](m_d), dim=1)}
        z = self._embed(self.online, f_v, f_s, f_d, maps[1], maps[2])

        self.update_momentum_encoder()
        if self.momentum_encoder is None:
            g_v, g_s, g_d = self._modes(self.online, views["v2"], views["s2"], views["d2"])
            k = self._embed(self.online, g_v, g_s, g_d,
                            activation_map(g_s).detach(), activation_map(g_d).detach())
        else:
            k = self._keys(views["v2"], views["s2"], views["d2"])

        extra = self._cross_video_positives(search)
        logs: dict = {}
        loss = sum(self.contrast(f"{q}-{kh}", [(z[q], k[kh])], logs, queue=kh,
                                 extra_positives=extra.get(SEARCH_OF[q]))
                   for q, kh in CONTRASTS)
        logs["loss/contrast"] = loss.detach()

        # L_align = mean_{b,p} (Â_v(p) - Â_{s+d}(p))^2 on the query pass, maps of mean 1, with
        # gradient (our reading).
        align = alignment_loss(*(activation_map(f) for f in (f_v, f_s, f_d)))
        logs["loss/align"] = align.detach()
        loss = loss + cfg.align_weight * align

        if self.queue is not None:
            self.queue.enqueue(**k)
        logs["loss/total"] = loss.detach()
        return loss, logs

    @torch.no_grad()
    def _cross_video_positives(self, search: dict | None) -> dict:
        """Top-k queue slots by softmax similarity of the static / dynamic search embeddings.

        P_s = softmax_j(r_s . Q_sv[j]); the top-k of P_s mark extra positives of vs and sv, of P_d
        those of vd and dv, of P_s + P_d those of vv. Used once the queue holds real keys only.
        """
        if search is None or not self.cfg.cross_video or not self.queue.is_full:
            return {}
        p_static = F.softmax(search["static"] @ self.queue["sv"].t(), dim=1)
        p_dynamic = F.softmax(search["dynamic"] @ self.queue["dv"].t(), dim=1)
        masks = {}
        for name, p in (("static", p_static), ("dynamic", p_dynamic), ("both", p_static + p_dynamic)):
            mask = torch.zeros_like(p, dtype=torch.bool)
            mask.scatter_(1, p.topk(min(self.cfg.topk, p.shape[1]), dim=1).indices, True)
            masks[name] = mask
        return masks
