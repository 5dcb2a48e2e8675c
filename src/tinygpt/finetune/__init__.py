"""Fine-tuning: the spam classifier (book chapter 6), instruction fine-tuning (chapter 7) and
LoRA (appendix E)."""
from .classify import (calc_accuracy_loader, calc_loss_batch, calc_loss_loader, classify_review,
                       evaluate_model, load_classifier, replace_head, run_classification,
                       save_classifier, train_classifier_simple)
from .instruct import extract_response, generate_responses, run_instruction_finetune
from .scoring import offline_scores, rouge_l_f1, score_with_ollama
from .lora import (LinearWithLoRA, LoRALayer, load_lora, lora_state_dict, merge_lora,
                   replace_linear_with_lora, save_lora)

__all__ = ["calc_accuracy_loader", "calc_loss_batch", "calc_loss_loader", "classify_review",
           "evaluate_model", "load_classifier", "replace_head", "run_classification",
           "save_classifier", "train_classifier_simple", "extract_response", "generate_responses",
           "offline_scores", "rouge_l_f1", "run_instruction_finetune", "score_with_ollama",
           "LinearWithLoRA", "LoRALayer", "load_lora", "lora_state_dict", "merge_lora",
           "replace_linear_with_lora", "save_lora"]
