"""Evaluation maths against naive references (scikit-learn for the logistic regression and its
cross-validation), and video-level feature averaging."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from hdc_lib.backbones import build_backbone
from hdc_lib.evaluate import (L2_STRENGTHS, confusion_matrix, fit_logistic, fit_probes, linear_probe,
                              retrieval_recall, stratified_folds)
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


@pytest.fixture(autouse=True)
def scikit_learn_on_one_thread():
    """scikit-learn's loss runs OpenMP threads; on a busy 2-core machine they wait on each other
    (a 363-iteration fit: 0.86 s on two threads, 0.09 s on one)."""
    with threadpool_limits(1):
        yield


def naive_folds(labels, k):
    """stratified_folds spelled out: class by class, items in order, dealt 0, 1, ..., k-1, 0, ..."""
    folds, dealt = [0] * len(labels), 0
    for c in sorted(set(labels)):
        for i, label in enumerate(labels):
            if label == c:
                folds[i], dealt = dealt % k, dealt + 1
    return folds


def test_stratified_folds_deal_every_class_evenly_and_deterministically():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (103,), generator=g)
    for k in (2, 5):
        folds = stratified_folds(labels, k)
        assert folds.tolist() == naive_folds(labels.tolist(), k)
        assert torch.equal(folds, stratified_folds(labels.clone(), k))
        sizes = torch.bincount(folds, minlength=k)
        assert sizes.max() - sizes.min() <= 1
        for c in range(5):
            per_fold = torch.bincount(folds[labels == c], minlength=k)
            assert per_fold.max() - per_fold.min() <= 1


def standardised(x):
    return (x - x.mean(0)) / x.std(0)


def test_fit_logistic_matches_scikit_learn_row_by_row():
    """Rows differing in their fit items (weight 0 = left out), in a class they lack, and in lambda."""
    g = torch.Generator().manual_seed(4)
    n, d, c = 90, 6, 4
    y = torch.arange(n) % c
    x = standardised(torch.randn(n, d, generator=g, dtype=torch.float64)
                     + 0.8 * torch.randn(c, d, generator=g, dtype=torch.float64)[y])
    keep = [torch.ones(n, dtype=torch.bool), torch.arange(n) % 3 != 0, y != 2]  # row 2 never sees class 2
    weight = torch.stack(keep).double()
    present = torch.stack([torch.bincount(y[k], minlength=c) > 0 for k in keep])
    x1 = torch.cat([torch.ones(n, 1, dtype=torch.float64), x], 1).expand(3, n, d + 1)
    for strength in (1e-3, 0.1, 10.0):
        theta = fit_logistic(x1, y.expand(3, n), weight, present, strength, tolerance=1e-8)
        for r, k in enumerate(keep):
            # ours: mean CE + lambda/2 ||W||^2; scikit-learn: C sum CE + 1/2 ||W||^2, so C = 1/(lambda n)
            reference = LogisticRegression(C=1 / (strength * int(k.sum())), tol=1e-12, max_iter=10000)
            reference.fit(x[k].numpy(), y[k].numpy())
            unseen = torch.zeros(c, dtype=torch.float64).masked_fill(~present[r], -torch.inf)
            ours = torch.softmax(x1[r] @ theta[r] + unseen, 1)  # as fit_probes predicts
            np.testing.assert_allclose(ours[:, reference.classes_].numpy(), reference.predict_proba(x.numpy()),
                                       atol=1e-5)
            assert torch.all(theta[r][:, ~present[r]] == 0)  # an unseen class's weights never move


def naive_cv_probe(x_fit, y_fit, x_all, folds=5):
    """The probe spelled out with scikit-learn: per strength, k-fold CV inside the fit set (each fold
    standardised with its own training part), pooled held-out accuracy, the best (ties: the
    stronger) refitted on the whole fit set, then every item predicted."""
    k = min(folds, len(y_fit))
    fold = np.array(naive_folds(list(y_fit), k))

    def fit_predict(x_train, y_train, x_test, strength):
        mean, std = x_train.mean(0), x_train.std(0)
        # scikit-learn fits two classes with one weight vector v = w_1 - w_0; ours has both, and at
        # its optimum w_1 = -w_0 = v/2, so our lambda/2 (|w_0|^2 + |w_1|^2) is lambda/4 |v|^2: twice C
        scale = 2 if len(np.unique(y_train)) == 2 else 1
        model = LogisticRegression(C=scale / (strength * len(y_train)), tol=1e-9, max_iter=10000)
        return model.fit((x_train - mean) / std, y_train).predict((x_test - mean) / std)

    accuracy = []
    for strength in L2_STRENGTHS:
        correct = sum((fit_predict(x_fit[fold != j], y_fit[fold != j], x_fit[fold == j], strength)
                       == y_fit[fold == j]).sum() for j in range(k))
        accuracy.append(correct / len(y_fit))
    best = max(range(len(L2_STRENGTHS)), key=lambda i: (accuracy[i], L2_STRENGTHS[i]))
    return np.array(accuracy), L2_STRENGTHS[best], fit_predict(x_fit, y_fit, x_all, L2_STRENGTHS[best])


def signal_and_noise(seed, n=120, signal_dims=2, noise_dims=18, classes=4, gap=1.0):
    """Classes that differ in a few dimensions, buried in noise ones: too weak a penalty overfits
    the noise, too strong a one loses the signal, so the CV has a real choice to make."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, signal_dims + noise_dims, generator=g, dtype=torch.float64)
    x[:, :signal_dims] += gap * torch.randn(classes, signal_dims, generator=g, dtype=torch.float64)[y]
    return x, y


def test_cross_validated_probe_matches_a_naive_scikit_learn_loop():
    x, y = signal_and_noise(5)
    levels = [x, x[:, :6]]
    fit = torch.zeros(2, len(y), dtype=torch.bool)
    fit[0, :80], fit[1, 40:] = True, True  # two overlapping fit sets, each predicting every item
    result = fit_probes(levels, y, fit, tolerance=1e-7)
    chosen = set()
    for s in range(2):
        for level, features in enumerate(levels):
            accuracy, strength, predictions = naive_cv_probe(features[fit[s]].numpy(), y[fit[s]].numpy(),
                                                             features.numpy())
            np.testing.assert_allclose(result.cv_accuracy[s, level].numpy(), accuracy)
            assert result.strength[s, level].item() == strength
            assert result.predictions[s, level].tolist() == predictions.tolist()
            chosen.add(strength)
    assert len(chosen) > 1  # the problems really do call for different strengths


def test_the_probe_never_reads_the_items_it_does_not_fit():
    """Features of NaN and made-up labels outside the fit set change nothing the fit decides: the
    same strengths, the same CV accuracies and the same predictions on the fit items as a probe
    that was only ever given the fit items."""
    x, y = signal_and_noise(6, n=150)
    fit = torch.arange(150) < 100
    alone = fit_probes([x[fit], x[fit, :5]], y[fit], torch.ones(1, 100, dtype=torch.bool))
    spoiled, labels = x.clone(), y.clone()
    spoiled[~fit] = float("nan")
    labels[~fit] = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(7))
    mixed = fit_probes([spoiled, spoiled[:, :5]], labels, fit[None])
    assert torch.equal(mixed.strength, alone.strength)
    assert torch.equal(mixed.cv_accuracy, alone.cv_accuracy)
    assert torch.equal(mixed.predictions[..., fit], alone.predictions)


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


def test_confusion_matrix_counts_every_true_predicted_pair():
    g = torch.Generator().manual_seed(5)
    labels, predicted = torch.randint(0, 4, (60,), generator=g), torch.randint(0, 4, (60,), generator=g)
    naive = torch.zeros(4, 4, dtype=torch.long)
    for true, guess in zip(labels.tolist(), predicted.tolist()):
        naive[true, guess] += 1
    assert torch.equal(confusion_matrix(labels, predicted, 4), naive)
    assert torch.equal(confusion_matrix(labels, labels, 4), torch.diag(torch.bincount(labels, minlength=4)))
