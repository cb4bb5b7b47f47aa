"""Video data: PyAV decoding, official splits, clip samplers, datasets, cache, checks."""
from .cache import DecodedVideoCache
from .check import CheckReport, add_check_parser, check_dataset
from .datasets import (HMDB51, UCF101, LoadStats, VideoDataset, VideoFolder, resize_frames,
                       resize_short_side)
from .samplers import RandomClipSampler, UniformClipSampler
from .splits import (Split, SplitFileError, read_hmdb51_split, read_split, read_ucf101_split,
                     read_video_folder)
from .video_io import VideoDecodeError, VideoInfo, read_clip, read_frames, video_info, write_video

__all__ = [
    "DecodedVideoCache", "CheckReport", "add_check_parser", "check_dataset",
    "HMDB51", "UCF101", "LoadStats", "VideoDataset", "VideoFolder",
    "resize_frames", "resize_short_side", "RandomClipSampler", "UniformClipSampler", "Split",
    "SplitFileError",
    "read_hmdb51_split", "read_split", "read_ucf101_split", "read_video_folder",
    "VideoDecodeError", "VideoInfo", "read_clip", "read_frames", "video_info", "write_video",
]
