// Package awstest holds the tests of deploy/aws: that the IAM policies of
// the CloudFormation template grant exactly the Route 53 calls signpost's
// code makes (actions_test.go), and that each variant of the template
// deploys into moto, the AWS emulator, where the real agent registers real
// containers into the stack's zone (stack_test.go). Nothing here reaches
// AWS: moto_server runs on 127.0.0.1.
package awstest
