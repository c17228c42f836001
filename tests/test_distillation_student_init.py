"""Student initialisation: a subset of teacher layers, and a compact student with PCA-projected embeddings."""

import pytest
import torch
from distill_helpers import mlm_batch, tiny_config, tiny_pair
from transformers import BertForSequenceClassification, XLMRobertaModel

from hf_earlyexit.distillation.student_init import compact_student, principal_directions, student_from_teacher_layers


def test_teacher_layer_subset_copies_the_chosen_layers():
    teacher, _ = tiny_pair()
    student = student_from_teacher_layers(teacher, [2, 4])
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == 64
    t_layers, s_layers = teacher.roberta.encoder.layer, student.roberta.encoder.layer
    for new, old in enumerate([2, 4]):
        for (name, value), (_, expected) in zip(
            s_layers[new].state_dict().items(), t_layers[old - 1].state_dict().items()
        ):
            torch.testing.assert_close(value, expected, msg=name)
    torch.testing.assert_close(student.lm_head.dense.weight, teacher.lm_head.dense.weight)
    # With the teacher's top layers removed, the student is the teacher truncated: same embeddings output.
    batch = mlm_batch(2)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        truncated = student_from_teacher_layers(teacher, [1, 2]).eval()
        expected = teacher.eval()(**inputs, output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(truncated.roberta(**inputs).last_hidden_state, expected)


def test_teacher_layer_subset_works_for_bert_classifiers():
    teacher = BertForSequenceClassification(tiny_config(4, 32, 2, "bert", num_labels=3))
    student = student_from_teacher_layers(teacher, [1, 3])
    torch.testing.assert_close(student.classifier.weight, teacher.classifier.weight)
    torch.testing.assert_close(
        student.bert.encoder.layer[1].output.dense.weight, teacher.bert.encoder.layer[2].output.dense.weight
    )


def test_teacher_layer_subset_keeps_a_pooler_less_encoder_pooler_less():
    # The converted multilingual-e5 checkpoint is such an encoder (trained with mean pooling, no pooler weights):
    # rebuilding the class with its default add_pooling_layer=True asked the teacher for pooler.dense.weight.
    teacher = XLMRobertaModel(tiny_config(4, 32, 2), add_pooling_layer=False).eval()
    student = student_from_teacher_layers(teacher, [2, 4]).eval()
    assert student.pooler is None and not any(key.startswith("pooler.") for key in student.state_dict())
    assert student.config.num_hidden_layers == 2 and len(student.encoder.layer) == 2
    assert teacher.config.num_hidden_layers == 4 and len(teacher.encoder.layer) == 4  # the teacher is untouched
    torch.testing.assert_close(student.encoder.layer[1].output.dense.weight, teacher.encoder.layer[3].output.dense.weight)
    assert student.encoder.layer[1].output.dense.weight is not teacher.encoder.layer[3].output.dense.weight
    inputs = {key: mlm_batch(2)[key] for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        expected = teacher(**inputs, output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(student_from_teacher_layers(teacher, [1, 2])(**inputs).last_hidden_state, expected)


@pytest.mark.parametrize("layers", [[], [0, 2], [5]])
def test_teacher_layer_subset_rejects_bad_layers(layers):
    teacher, _ = tiny_pair()
    with pytest.raises(ValueError, match="must be a non-empty list of teacher layers in 1..4"):
        student_from_teacher_layers(teacher, layers)


def test_compact_student_embeddings_are_the_teachers_principal_projection():
    teacher, _ = tiny_pair()
    student = compact_student(teacher, num_layers=2, hidden_size=16, num_attention_heads=2)
    assert (student.config.num_hidden_layers, student.config.hidden_size, student.config.intermediate_size) == (
        2,
        16,
        64,
    )
    teacher_words = teacher.roberta.embeddings.word_embeddings.weight.detach().double()
    student_words = student.roberta.embeddings.word_embeddings.weight.detach().double()
    mean, components = principal_directions(teacher_words, 16)
    torch.testing.assert_close(student_words, (teacher_words - mean) @ components)
    # Principal directions keep more of the teacher's variance than any random 16-dimensional projection.
    random_basis = torch.linalg.qr(
        torch.randn(64, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )[0]
    kept_random = ((teacher_words - mean) @ random_basis).pow(2).sum()
    assert student_words.pow(2).sum() > 1.2 * kept_random
    # A summed input embedding (word + position + token type) projects as the teacher's sum centred once.
    source, target = teacher.roberta.embeddings, student.roberta.embeddings
    rows = {"word_embeddings": 7, "position_embeddings": 3, "token_type_embeddings": 1}
    teacher_sum = sum(getattr(source, name).weight[row].detach().double() for name, row in rows.items())
    student_sum = sum(getattr(target, name).weight[row].detach().double() for name, row in rows.items())
    torch.testing.assert_close(student_sum, (teacher_sum - mean) @ components)
    assert student.lm_head.decoder.weight.data_ptr() == student.roberta.embeddings.word_embeddings.weight.data_ptr()
    with torch.no_grad():
        logits = student(input_ids=mlm_batch(2)["input_ids"]).logits
    assert logits.shape == (2, 12, 100) and torch.isfinite(logits).all()


def test_compact_student_rejects_wider_or_indivisible():
    teacher, _ = tiny_pair()
    with pytest.raises(ValueError, match="exceeds the teacher width 64"):
        compact_student(teacher, hidden_size=128)
    with pytest.raises(ValueError, match="num_attention_heads=3 does not divide hidden_size=16"):
        compact_student(teacher, hidden_size=16, num_attention_heads=3)


def test_layer_subset_of_a_bare_encoder_takes_the_requested_layers():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    teacher = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                   intermediate_size=32)).eval()  # fmt: skip
    student = student_from_teacher_layers(teacher, [2, 4])
    for new, old in ((0, 1), (1, 3)):
        assert torch.equal(
            student.encoder.layer[new].output.dense.weight, teacher.encoder.layer[old].output.dense.weight
        )
