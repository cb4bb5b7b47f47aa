"""Evaluation maths against naive references, and video-level feature averaging."""
import math

import pytest
import torch
import torch.nn.functional as F

from hdc_lib.backbones import build_backbone
from hdc_lib.evaluate import linear_probe, retrieval_recall
from hdc_lib.features import extract_features, knn_predict


def test_knn_matches_a_naive_weighted_vote():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(40, 8, generator=g), torch.randn(10, 8, generator=g)
    labels = torch.randint(0, 4, (40,), generator=g)
    predicted = knn_predict(bank, labels, queries, num_classes=4, k=5, temperature=0.07)
    for i in range(10):
        sims = [float(F.cosine_similarity(queries[i], bank[j], dim=0)) for j in range(40)]
        nearest = sorted(range(40), key=lambda j: -sims[j])[:5]
        votes = [0.0] * 4
        for j in nearest:
            votes[int(labels[j])] += math.exp(sims[j] / 0.07)
        assert int(predicted[i]) == max(range(4), key=lambda c: votes[c])


def test_retrieval_recall_matches_a_naive_search():
    g = torch.Generator().manual_seed(1)
    train_x, test_x = torch.randn(30, 6, generator=g), torch.randn(12, 6, generator=g)
    train_y, test_y = torch.randint(0, 3, (30,), generator=g), torch.randint(0, 3, (12,), generator=g)
    recall = retrieval_recall(train_x, train_y, test_x, test_y, ks=(1, 5))
    mean = train_x.mean(0)
    gallery = F.normalize(train_x - mean, dim=1)
    for k in (1, 5):
        hits = 0
        for i in range(12):
            q = F.normalize(test_x[i] - mean, dim=0)
            order = sorted(range(30), key=lambda j: -float(q @ gallery[j]))[:k]
            hits += any(int(train_y[j]) == int(test_y[i]) for j in order)
        assert recall[f"R@{k}"] == pytest.approx(hits / 12)


def test_linear_probe_separates_separable_classes_and_not_noise():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(4, 16, generator=g) * 4
    y_train, y_test = torch.arange(200) % 4, torch.arange(80) % 4
    x_train = centres[y_train] + torch.randn(200, 16, generator=g)
    x_test = centres[y_test] + torch.randn(80, 16, generator=g)
    assert linear_probe(x_train, y_train, x_test, y_test) > 0.95
    noise_train, noise_test = torch.randn(200, 16, generator=g), torch.randn(80, 16, generator=g)
    assert linear_probe(noise_train, y_train, noise_test, y_test) < 0.5


class ClipList(torch.utils.data.Dataset):
    def __init__(self, videos):
        self.videos = videos

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return {"video": self.videos[i], "label": i % 2, "index": i}


def test_features_are_the_mean_over_a_videos_clips():
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    videos = torch.randint(0, 256, (3, 2, 4, 16, 16, 3), dtype=torch.uint8)  # 3 videos x 2 clips
    to_input = lambda clips: clips.permute(0, 4, 1, 2, 3).float() / 255  # noqa: E731
    result = extract_features(backbone, ClipList(videos), to_input, "cpu", batch_size=2)
    backbone.eval()
    with torch.no_grad():
        expected = torch.stack([backbone(to_input(v)).mean(0) for v in videos])
    torch.testing.assert_close(result["features"]["layer4"], expected, atol=1e-5, rtol=1e-5)
    assert result["labels"].tolist() == [0, 1, 0] and result["index"].tolist() == [0, 1, 2]
    assert backbone.training is False  # it was in eval mode before; extract_features restores it
