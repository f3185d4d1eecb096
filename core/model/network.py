"""ImpliCity-0 / -mono / -stereo: point-plane encoder (+ image encoder) and the implicit decoder.

``encode`` runs once per patch and returns the feature maps; ``decode`` is the cheap per-query
part, so DSM extraction calls it many times on one encoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..vocabulary import VARIANT_KINDS, VARIANT_NAMES
from .config import ModelConfig
from .decoder import DecoderColumns, LocalDecoder, sample_plane
from .image_encoder import HGFilter
from .point_encoder import LocalPoolPointNet
from .prior import CONTEXT_CHANNELS, clamp_to_prior, plane_context, surface_prior


@dataclass
class EncodedPatch:
    """What ``encode`` returns: the point plane and (optionally) image features, plane-oriented.

    Both maps have row index growing northwards (y), so decode samples them at the same grid.
    """

    plane: torch.Tensor                  # (B, feature_dim, R, R)
    image: torch.Tensor | None = None    # (B, feature_dim, S/4, S/4), rows south → north
    prior: torch.Tensor | None = None    # (B, 1, R, R) robust surface in normalised z (height_reference: prior)

    def to(self, device: torch.device | str) -> EncodedPatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return EncodedPatch(self.plane.to(device), move(self.image), move(self.prior))

    @property
    def batch_size(self) -> int:
        return int(self.plane.shape[0])


class ImpliCityNet(nn.Module):
    """The ImpliCity network. Submodule names follow the reference so its state dicts load as is."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.n_images = int(config.n_images)
        point_encoder = LocalPoolPointNet(
            hidden_dim=config.hidden_dim, feature_dim=config.feature_dim, n_blocks=config.encoder_blocks,
            plane_resolution=config.plane_resolution, unet_depth=config.unet_depth,
            unet_start_filters=config.unet_start_filters,
            context_channels=CONTEXT_CHANNELS if config.plane_context == "prior" else 0)
        # The reference names the point encoder "encoder" in ImpliCity-0 and "point_encoder" otherwise.
        if self.n_images == 0:
            self.encoder = point_encoder
            self.image_encoder: HGFilter | None = None
        else:
            self.point_encoder = point_encoder
            self.image_encoder = HGFilter(
                self.n_images, n_stacks=config.image_stacks, hourglass_depth=config.image_hourglass_depth,
                out_dim=config.feature_dim, stem_channels=config.image_stem_channels,
                channels=config.image_channels, groups=config.image_norm_groups)
        self.decoder = LocalDecoder(config.feature_dim, config.decoder_hidden_dim, config.decoder_blocks,
                                    config.n_classes)

    def _sample(self, features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """:func:`sample_plane` with this network's ``plane_sampling`` convention."""
        return sample_plane(features, xy, cell_centres=self.config.plane_sampling == "centres")

    @property
    def points_encoder(self) -> LocalPoolPointNet:
        """The point encoder whatever its state-dict name."""
        return self.encoder if self.n_images == 0 else self.point_encoder

    def _check_inputs(self, points: torch.Tensor, images: torch.Tensor | None) -> None:
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[1] == 0:
            raise InputError(f"{self.config.variant}: points must be (B, N>0, 3) normalised coordinates, "
                             f"got shape {tuple(points.shape)}.")
        if self.n_images == 0:
            return  # ImpliCity-0 ignores images (e.g. trained on a stereo data set for comparison)
        if images is None or images.dim() != 4 or images.shape[1] != self.n_images:
            got = "none" if images is None else (
                str(images.shape[1]) if images.dim() == 4 else f"a tensor of shape {tuple(images.shape)}")
            raise InputError(f"{image_count_message(self.n_images, got)}. Images must be (B, n_images, S, S).")
        s = images.shape[-1]
        if images.shape[-2] != s or s % self.config.image_divisor:
            raise InputError(f"{self.config.variant}: images must be square with a side divisible by "
                             f"{self.config.image_divisor}, got {tuple(images.shape[-2:])}.")
        if images.shape[0] != points.shape[0]:
            raise InputError(f"{self.config.variant}: {images.shape[0]} image stacks for {points.shape[0]} point clouds.")

    def encode(self, points: torch.Tensor, images: torch.Tensor | None = None) -> EncodedPatch:
        """Feature maps of normalised points (B, N, 3) and images (B, n_images, S, S), row 0 = north."""
        self._check_inputs(points, images)
        prior = context = None
        if self.config.height_reference == "prior":
            cfg = self.config
            cell_m = cfg.patch_size / cfg.plane_resolution
            refine = cfg.prior_refine_radius_m / cell_m if cfg.prior_refinement == "bilateral" else 0.0
            prior = surface_prior(points, cfg.plane_resolution, cfg.prior_outlier_m / cfg.z_std, cfg.prior_smoothing,
                                  refine, cfg.prior_noise_floor_m / cfg.z_std)
            if cfg.plane_context == "prior":
                context = plane_context(points, prior, cfg.z_std / cfg.prior_z_scale)
            at_points = self._sample(prior, points[..., :2]).squeeze(-1)
            if cfg.point_clip_m > 0:
                points = clamp_to_prior(points, at_points, cfg.point_clip_m / cfg.z_std)
            if cfg.point_height == "prior":  # the encoder sees each point's height above the surface
                rel = (points[..., 2] - at_points) * (cfg.z_std / cfg.prior_z_scale)
                points = torch.cat([points[..., :2], rel.unsqueeze(-1)], dim=-1)
        plane = self.points_encoder(points, context)
        image = None
        if self.image_encoder is not None and images is not None:
            # Raster rows run north→south; the plane's rows run south→north.
            image = torch.flip(self.image_encoder(images.to(plane.dtype)), dims=[2])
        return EncodedPatch(plane, image, prior)

    def decode(self, query: torch.Tensor, features: EncodedPatch) -> torch.Tensor:
        """Logits of normalised queries (B, M, 3): (B, M), or (B, M, 3) for the 3-class model."""
        xy = query[..., :2]
        if features.prior is not None:
            # The decoder sees the height above the robust surface, in units of prior_z_scale metres.
            rel = (query[..., 2:3] - self._sample(features.prior, xy)) * (self.config.z_std / self.config.prior_z_scale)
            query = torch.cat([xy, rel.to(query.dtype)], dim=-1)
        c = self._sample(features.plane, xy)
        if features.image is not None:
            c = c + self._sample(features.image, xy)
        out = self.decoder(query, c)
        return out.squeeze(-1) if self.config.n_classes == 1 else out

    def decode_columns(self, xy: torch.Tensor, features: EncodedPatch) -> ColumnDecoder:
        """A decoder for many heights over the same P pixels: xy (P, 2) normalised, one patch.

        Equal to :meth:`decode` (up to float rounding) on queries (xy[i], z): the features, the
        prior and everything else that does not depend on z are computed once per pixel."""
        xy = xy[None]
        c = self._sample(features.plane, xy)
        if features.image is not None:
            c = c + self._sample(features.image, xy)
        prior = None if features.prior is None else self._sample(features.prior, xy)[0, :, 0]
        return ColumnDecoder(self.decoder.columns(xy[0], c[0]), prior,
                             self.config.z_std / self.config.prior_z_scale, self.config.n_classes)

    def forward(self, query: torch.Tensor, points: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(query, self.encode(points, images))


class ColumnDecoder:
    """``(columns (Q,), z (Q, K) normalised) -> logits (Q, K)`` (or (Q, K, 3) for 3 classes)."""

    def __init__(self, columns: DecoderColumns, prior: torch.Tensor | None, prior_scale: float,
                 n_classes: int) -> None:
        self.columns, self.prior, self.prior_scale, self.n_classes = columns, prior, prior_scale, n_classes

    def __call__(self, columns: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.prior is not None:
            z = (z - self.prior[columns][:, None]) * self.prior_scale
        out = self.columns(columns, z)
        return out.squeeze(-1) if self.n_classes == 1 else out


def image_count_message(expected: int, got: int | str) -> str:
    """'model expects 2 ortho-images (stereo), got 1' — shared by the network and the loader."""
    kind = {0: VARIANT_NAMES[0], **{n: VARIANT_KINDS[n] for n in (1, 2)}}.get(expected, f"{expected} images")
    plural = "" if expected == 1 else "s"
    return f"model expects {expected} ortho-image{plural} ({kind}), got {got}"


def build_model(config: ModelConfig) -> ImpliCityNet:
    """The network described by ``config`` (freshly initialised)."""
    return ImpliCityNet(config)
