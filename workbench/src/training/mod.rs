//! Training: one loop for teachers and students ([`learner`]), the optimizer and schedule
//! ([`train`]), the student's loss from a strategy's recipe ([`loss`], [`student`]) and
//! fine-tuning teachers ([`teach`]).

pub mod learner;
pub mod loss;
pub mod student;
pub mod teach;
pub mod train;
