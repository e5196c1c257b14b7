"""Mean-pooled sequence classifiers, as the workbench trains and exports them.

transformers' own `...ForSequenceClassification` classes read the first token (through a pooler
for BERT); a workbench model reads the mean of the last layer over the attention mask, then one
linear layer. Loaded as a native class it would get a random pooler and a head on the wrong
vector, so the checkpoint names its own model type, which transformers refuses to load unless
asked to run this file:

    AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)
    pipeline("text-classification", model=dir, trust_remote_code=True)

The encoder is transformers' own (BERT, RoBERTa, XLM-RoBERTa or DistilBERT), under the same
tensor names as in a native checkpoint; only the pooling and the head are defined here. Inputs
longer than the length the model was trained at (config.json's `max_input_length`, the
tokenizer's `model_max_length`) are cut as the tokenizer's truncation cuts them, keeping the final special
token, so that an untruncated call gives the workbench's predictions and never runs past the
position table.

Written by the workbench next to every mean-pooled checkpoint; edit the workbench's copy
(core/models/src/modeling_workbench.py), not this one.
"""

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput


class WorkbenchBertConfig(BertConfig):
    model_type = "workbench-mean-pooled-bert"


class WorkbenchRobertaConfig(RobertaConfig):
    model_type = "workbench-mean-pooled-roberta"


class WorkbenchXLMRobertaConfig(XLMRobertaConfig):
    model_type = "workbench-mean-pooled-xlm-roberta"


class WorkbenchDistilBertConfig(DistilBertConfig):
    model_type = "workbench-mean-pooled-distilbert"


def cut_to(input_ids, attention_mask, token_type_ids, max_length):
    """Each row cut to `max_length` tokens, its last real token (the end token) kept last."""
    if input_ids.shape[1] <= max_length:
        return input_ids, attention_mask, token_type_ids
    lengths = attention_mask.sum(dim=1)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    ends = input_ids[rows, lengths - 1]
    cut = input_ids[:, :max_length].clone()
    long = lengths > max_length
    cut[long, max_length - 1] = ends[long]
    token_types = None if token_type_ids is None else token_type_ids[:, :max_length]
    return cut, attention_mask[:, :max_length], token_types


class MeanPooledForSequenceClassification(PreTrainedModel):
    """An encoder, the mean of its last layer over the attention mask, dropout, a linear layer."""

    encoder_class = None
    # The attribute holding the encoder: the prefix of its tensor names.
    base_model_prefix = None
    # Whether the encoder has a pooler to leave out (DistilBERT has none).
    has_pooler = True
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        options = {"add_pooling_layer": False} if self.has_pooler else {}
        setattr(self, self.base_model_prefix, self.encoder_class(config, **options))
        # The head's dropout under each family's name; BERT and RoBERTa fall back to the encoder's.
        dropout = getattr(config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(config, "seq_classif_dropout", None)
        if dropout is None:
            dropout = config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        max_length = getattr(self.config, "max_input_length", None)
        if max_length:
            input_ids, attention_mask, token_type_ids = cut_to(input_ids, attention_mask, token_type_ids, max_length)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.has_pooler and token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        for option in ("output_hidden_states", "output_attentions"):
            if kwargs.get(option) is not None:
                inputs[option] = kwargs[option]
        outputs = getattr(self, self.base_model_prefix)(**inputs, return_dict=True)
        hidden = outputs.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class WorkbenchBertForSequenceClassification(MeanPooledForSequenceClassification):
    config_class = WorkbenchBertConfig
    encoder_class = BertModel
    base_model_prefix = "bert"


class WorkbenchRobertaForSequenceClassification(MeanPooledForSequenceClassification):
    config_class = WorkbenchRobertaConfig
    encoder_class = RobertaModel
    base_model_prefix = "roberta"


class WorkbenchXLMRobertaForSequenceClassification(MeanPooledForSequenceClassification):
    config_class = WorkbenchXLMRobertaConfig
    encoder_class = XLMRobertaModel
    base_model_prefix = "roberta"


class WorkbenchDistilBertForSequenceClassification(MeanPooledForSequenceClassification):
    config_class = WorkbenchDistilBertConfig
    encoder_class = DistilBertModel
    base_model_prefix = "distilbert"
    has_pooler = False
