"""Strategies on the layer map: what trains per phase, BN policy, LoRA targets, LR groups, schedules."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from hftl.config import load_config
from hftl.models.layer_map import build_layer_map
from hftl.models.loading import init_for_scratch
from hftl.models.optimization import lr_lambda, param_groups
from hftl.models.strategies import build_plan, set_train_mode, set_trainable
from hftl.models.strategies.lora import apply_lora, default_lora_targets


def tiny_vit():
    config = tf.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64
    )
    return tf.ViTForImageClassification(config)


def tiny_resnet():
    return tf.ResNetForImageClassification(tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32], depths=[1, 1, 1]))


def cfg(**overrides):
    base = {"model.name_or_path": "m", "data.train": "d", "train.epochs": 3}
    return load_config(None, {**base, **overrides})


def parts_of(model, lm, names):
    return {lm.part_of(n) for n in names}


def test_head_only_trains_only_the_head():
    model = tiny_vit()
    lm = build_layer_map(model)
    plan = build_plan(model, lm, cfg(**{"strategy.name": "head_only"}))
    assert parts_of(model, lm, plan.phases[0].trainable) == {"head"}


@pytest.mark.parametrize("n", [0, 1, 3])
def test_freeze_trains_exactly_the_top_n_blocks_and_head(n):
    model = tiny_vit()
    lm = build_layer_map(model)
    plan = build_plan(model, lm, cfg(**{"strategy.name": "freeze", "strategy.trainable_blocks": n}))
    expected = {"head"} | {f"block.{i}" for i in range(4 - n, 4)} | ({"neck"} if n else set())
    assert parts_of(model, lm, plan.phases[0].trainable) == expected
    # every parameter of a trainable part trains, none of a frozen one
    for name, _ in model.named_parameters():
        assert (name in plan.phases[0].trainable) == (lm.part_of(name) in expected)


def test_freeze_more_blocks_than_the_model_has_is_refused():
    from hftl.utils.errors import ConfigError

    model = tiny_vit()
    with pytest.raises(ConfigError, match="only 4 backbone blocks"):
        build_plan(model, build_layer_map(model), cfg(**{"strategy.name": "freeze", "strategy.trainable_blocks": 5}))


def test_hybrid_warmup_phase_then_strategy():
    model = tiny_vit()
    lm = build_layer_map(model)
    plan = build_plan(model, lm, cfg(**{"strategy.name": "full", "strategy.head_warmup_epochs": 1}))
    assert [(p.name, p.start_epoch, p.epochs) for p in plan.phases] == [("head_warmup", 0, 1), ("full", 1, 2)]
    assert parts_of(model, lm, plan.phases[0].trainable) == {"head"}
    assert plan.phase_at(0).name == "head_warmup" and plan.phase_at(2).name == "full"
    set_trainable(model, plan.phases[0].trainable)
    assert all(p.requires_grad == (lm.part_of(n) == "head") for n, p in model.named_parameters())


def test_lora_targets_attention_for_vit_and_convs_for_resnet():
    vit = tiny_vit()
    targets = default_lora_targets(vit, build_layer_map(vit))
    assert targets and all(t.rsplit(".", 1)[1] in ("q_proj", "v_proj") for t in targets)
    assert len(targets) == 8  # q and v in each of 4 layers
    resnet = tiny_resnet()
    targets = default_lora_targets(resnet, build_layer_map(resnet))
    assert targets and all(isinstance(resnet.get_submodule(t), torch.nn.Conv2d) for t in targets)
    assert all(".encoder.stages." in t for t in targets)  # not the stem, not the head


def test_lora_plan_trains_adapters_and_a_copy_of_the_head_only():
    model = tiny_vit()
    lm = build_layer_map(model)
    peft_model = apply_lora(model, lm, cfg().strategy.lora)
    plan = build_plan(peft_model, lm, cfg(**{"strategy.name": "lora"}))
    trainable = plan.phases[0].trainable
    assert trainable and all("lora_" in n or ".modules_to_save." in n for n in trainable)
    assert any(".modules_to_save." in n for n in trainable)
    assert not any(".original_module." in n for n in trainable)


def test_freeze_stats_keeps_frozen_batchnorm_in_eval_mode_after_train():
    model = tiny_resnet()
    lm = build_layer_map(model)
    plan = build_plan(model, lm, cfg(**{"strategy.name": "freeze", "strategy.trainable_blocks": 1}))
    set_trainable(model, plan.phases[0].trainable)
    set_train_mode(model, lm, plan.phases[0], "freeze_stats")
    bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for name, bn in bns.items():
        assert bn.training == (lm.part_of(name) == "block.2"), name
    # and the statistics really stay put through a forward pass in "training"
    frozen = {n: m.running_mean.clone() for n, m in bns.items() if not m.training}
    model(pixel_values=torch.randn(4, 3, 32, 32))
    assert all(torch.equal(bns[n].running_mean, v) for n, v in frozen.items())
    set_train_mode(model, lm, plan.phases[0], "train")
    assert all(bn.training for bn in bns.values())


def test_scratch_init_gives_identity_norms_and_he_convs():
    model = tf.EfficientNetForImageClassification(
        tf.EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=64)
    )
    init_for_scratch(model)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0) and torch.all(m.running_var == 1)
        if isinstance(m, torch.nn.Conv2d) and m.weight.numel() > 100:
            assert 0.01 < m.weight.std().item() < 2


def test_param_groups_carry_discriminative_learning_rates():
    model = tiny_vit()
    lm = build_layer_map(model)
    c = cfg(**{"train.learning_rate": 1e-3, "train.head_learning_rate": 1e-2, "train.layer_lr_decay": 0.5})
    plan = build_plan(model, lm, c)
    groups = param_groups(model, lm, plan, c.train)
    lr = {g["part"]: g["lr"] for g in groups}
    assert lr["head"] == pytest.approx(1e-2)
    assert lr["neck"] == pytest.approx(1e-3)
    assert [lr[f"block.{i}"] for i in range(4)] == pytest.approx([1.25e-4, 2.5e-4, 5e-4, 1e-3])
    assert lr["embeddings"] == pytest.approx(6.25e-5)
    # weight decay only on matrices; every parameter in exactly one group
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2 or name.endswith(("cls_token", "position_embeddings"))
        assert decay_of[id(p)] == (0.0 if no_decay else c.train.weight_decay), name
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))
    # the optimizer keeps them as given, from the start
    opt = torch.optim.AdamW(groups)
    assert sorted({g["lr"] for g in opt.param_groups}) == sorted(set(lr.values()))


def test_hybrid_optimizer_holds_backbone_groups_from_the_start():
    model = tiny_vit()
    lm = build_layer_map(model)
    c = cfg(**{"strategy.name": "freeze", "strategy.trainable_blocks": 1, "strategy.head_warmup_epochs": 1})
    groups = param_groups(model, lm, build_plan(model, lm, c), c.train)
    assert {g["part"] for g in groups} == {"block.3", "neck", "head"}


def test_schedules_warm_up_decay_and_restart_per_phase():
    model = tiny_vit()
    lm = build_layer_map(model)
    c = cfg(**{"strategy.head_warmup_epochs": 1, "train.warmup_ratio": 0.25, "train.scheduler": "linear"})
    f = lr_lambda(build_plan(model, lm, c), steps_per_epoch=4, total_steps=12, train=c.train)
    values = [f(s) for s in range(12)]
    assert values[0] < 1 and values[1] == pytest.approx(1.0)  # warm-up (1 step) then peak in phase 1
    assert values[3] < values[1]  # decays within the warm-up phase
    assert values[4] < values[5] and values[6] == pytest.approx(1.0)  # restarts: warm-up (2 steps) in phase 2
    assert values[11] < 0.2  # ends near zero
    cosine = lr_lambda(
        build_plan(model, lm, cfg(**{"train.scheduler": "cosine"})), 4, 12, cfg(**{"train.scheduler": "cosine"}).train
    )
    assert cosine(0) == pytest.approx(1.0) and cosine(6) == pytest.approx(0.5)
    constant = cfg(**{"train.scheduler": "constant"})
    assert lr_lambda(build_plan(model, lm, constant), 4, 12, constant.train)(11) == 1.0
